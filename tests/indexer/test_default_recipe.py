"""The default code is a recipe fitted on each index's own tiles: recorded, and kept on append."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from lookalike_testkit import run_main

from lookalike.data.shipped import default_hash_path
from lookalike.indexer.store import open_index
from lookalike.models.hashing import (
    DEFAULT_BITS,
    DEFAULT_METHOD,
    ConcatHash,
    LinearHash,
    is_current_default,
    load_hash_model,
)

pytestmark = pytest.mark.slow


def test_an_index_without_hash_records_the_recipe_fitted_on_its_tiles(mars_index):
    index = open_index(mars_index)
    model = load_hash_model(index.hash_model_path)
    assert isinstance(model, ConcatHash) and is_current_default(model)
    assert model.bits == DEFAULT_BITS == index.bits and model.method == DEFAULT_METHOD
    learned, fitted = model.parts
    assert learned.to_bytes() == load_hash_model(default_hash_path()).to_bytes()
    assert isinstance(fitted, LinearHash) and fitted.method == "pca-itq"
    assert model.meta["fitted_on"] == index.n and model.meta["fitted_bits"] == fitted.bits
    recorded = index.manifest["hash"]
    assert recorded["method"] == DEFAULT_METHOD and recorded["meta"]["recipe"] == "default"


def test_appended_tiles_are_encoded_with_the_index_own_fitted_model(mars_index, tmp_path, data_dir):
    copy = tmp_path / "index"
    shutil.copytree(mars_index, copy)
    before = open_index(copy)
    model_bytes = before.hash_model_path.read_bytes()
    code, _, err = run_main(
        ["index", "mars_8k", "--zones", "32N", "--append", "--out", copy], LOOKALIKE_DATA=data_dir
    )
    assert code == 0, err
    after = open_index(copy)
    assert after.n > before.n and after.hash_model_path.read_bytes() == model_bytes
    # the same tiles indexed alone with that model file give the appended rows' codes; refitting
    # the recipe on them alone would not
    model_file = tmp_path / "model.npz"
    model_file.write_bytes(model_bytes)
    alone = tmp_path / "alone"
    code, _, err = run_main(
        ["index", "mars_8k", "--zones", "32N", "--hash", model_file, "--out", alone], LOOKALIKE_DATA=data_dir
    )
    assert code == 0, err
    alone_index = open_index(alone)
    rows = [after.row_of(t) for t in alone_index.tiles["tile_id"]]
    assert np.array_equal(after.codes[rows], alone_index.codes)
    refit = tmp_path / "refit"
    code, _, err = run_main(["index", "mars_8k", "--zones", "32N", "--out", refit], LOOKALIKE_DATA=data_dir)
    assert code == 0, err
    assert not np.array_equal(open_index(refit).codes, alone_index.codes)
