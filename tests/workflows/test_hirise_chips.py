"""HiRISE chips indexed, classified and placed at their observations: ``lookalike index --images
... --footprints CSV --classify hirise``, placing after classifying, and the demo's HiRISE layer.

The landmark catalogue itself (facets, masks, placement, checksums) is tested in
tests/indexer/test_catalogue.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lookalike.fileio import sha256_file
from lookalike.indexer.store import open_index
from lookalike.models.classifier import resolve_classifier

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow


def _tiny_hirise(tmp_path):
    """Six tiny chips from three source images (two known observations) and an observation CSV."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(tmp_path / f"c{i}.png")
        rows.append(
            dict(
                path=f"c{i}.png",
                label="crater" if i % 2 else "other",
                source_image=["ESP_1_2_RED", "ESP_3_4_RED", "ESP_5_6_RED"][i % 3],
            )
        )
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame(
        {
            "observation_id": ["ESP_1_2", "ESP_3_4"],
            "minimum_latitude": [10.0, -20.0],
            "maximum_latitude": [10.5, -19.0],
            "westernmost_longitude": [350.0, 20.0],
            "easternmost_longitude": [350.2, 20.4],
            "start_time": ["2008-05-01T10:00:00", "2012-01-01"],
        }
    ).to_csv(tmp_path / "obs.csv", index=False)


def test_cli_places_and_classifies_chips(tmp_path):
    """`lookalike index --images ... --footprints CSV --classify hirise` on six tiny chips."""
    from lookalike_testkit import run_main

    _tiny_hirise(tmp_path)
    out = tmp_path / "ix"
    code, stdout, err = run_main(
        [
            "index",
            "--images",
            tmp_path,
            "--labels",
            tmp_path / "labels.csv",
            "--footprints",
            tmp_path / "obs.csv",
            "--classify",
            "hirise",
            "--out",
            out,
            "--batch-size",
            "8",
        ],
        LOOKALIKE_CACHE=str(tmp_path / "cache"),
    )
    assert code == 0, err
    assert "2 image(s) have no known HiRISE observation" in stdout
    index = open_index(out)
    assert index.manifest["basemap"] == "mars_8k"
    assert index.tiles["scene"].tolist()[:3] == ["ESP_1_2", "ESP_3_4", "ESP_5_6"]
    assert index.tiles["lon"].iloc[0] == pytest.approx(-9.9) and index.tiles["zone"].iloc[1] == "34S"
    lm = index.landmarks
    assert len(lm) == 6 and lm["row"].tolist() == list(range(6))
    assert set(lm["label"]) <= set(json.loads(json.dumps(index.manifest["landmarks"]["classes"])))
    p = lm[[c for c in lm.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(lm["posterior"], p.max(axis=1), rtol=1e-6)
    # the class filter works on the new index, per observation
    code, stdout, err = run_main(
        [
            "search",
            out,
            "--tile",
            "c0.png",
            "--classes",
            lm["label"].iloc[0],
            "--json",
            tmp_path / "hits.json",
        ]
    )
    assert code == 0, err
    code, _, err = run_main(["search", out, "--tile", "c0.png", "--classes", "volcano"])
    assert code == 2 and "unknown landmark class" in err
    # in the explorer a click near a (tiny) observation footprint picks its chip; far away, none
    from lookalike.explorer.state import ExplorerState

    state = ExplorerState(index=index, index_name="chips")
    state.click(20.2 + 0.6, -19.5)
    assert state.query_tile == "c1.png" and len(state.hits) > 0 and state.error == ""
    state.click(100.0, 50.0)
    assert "no indexed tile covers" in state.error and state.query_tile == "c1.png"


def test_demo_hirise_layer_builds_once(tmp_path):
    """The demo's HiRISE layer from a data cache holding hirise_v1/ and the observation table."""
    from lookalike_testkit import environ

    from lookalike.workflows.demo import hirise_layer

    data = tmp_path / "data"
    (data / "hirise_v1").mkdir(parents=True)
    _tiny_hirise(data / "hirise_v1")
    (data / "hirise_v1" / "obs.csv").rename(data / "hirise_observations.csv")
    with environ(LOOKALIKE_DATA=str(data), LOOKALIKE_CACHE=str(tmp_path / "cache")):
        path = hirise_layer(tmp_path / "indexes", progress=False)
        index = open_index(path)
        assert index.n == 6 and len(index.landmarks) == 6 and index.manifest["basemap"] == "mars_8k"
        generation = index.manifest["generation"]
        assert hirise_layer(tmp_path / "indexes", progress=False) == path  # built once
        assert open_index(path).manifest["generation"] == generation
        made_by = index.manifest["landmarks"]
        assert made_by["model"] == "hirise" and made_by["model_sha256"] == sha256_file(
            resolve_classifier("hirise")
        )
        # a catalogue made by an earlier shipped classifier is made again, the index kept
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["landmarks"]["model_sha256"] = "0" * 64
        (path / "manifest.json").write_text(json.dumps(manifest))
        assert hirise_layer(tmp_path / "indexes", progress=False) == path
        again = open_index(path)
        assert again.manifest["landmarks"]["model_sha256"] == made_by["model_sha256"]
        assert again.manifest["generation"] == generation + 1 and again.n == 6 and len(again.landmarks) == 6
        generation += 1
        # a layer made with an earlier default code (or views) is built again, and the old
        # one removed once the new one is complete
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["backbone"]["views"] = 1
        (path / "manifest.json").write_text(json.dumps(manifest))
        assert hirise_layer(tmp_path / "indexes", progress=False) == path
        rebuilt = open_index(path)
        assert rebuilt.views == 2 and rebuilt.n == 6 and len(rebuilt.landmarks) == 6
        assert not path.with_name(f"{path.name}.previous").exists()
        (data / "hirise_observations.csv").unlink()
        assert hirise_layer(tmp_path / "other", progress=False) is None


def test_chips_classified_before_placing_follow_their_chips(tmp_path):
    from lookalike_testkit import run_main

    from lookalike.indexer.catalogue import place_index_at_observations

    _tiny_hirise(tmp_path)
    out = tmp_path / "ix"
    code, _, err = run_main(
        [
            "index",
            "--images",
            tmp_path,
            "--labels",
            tmp_path / "labels.csv",
            "--classify",
            "hirise",
            "--out",
            out,
            "--batch-size",
            "8",
        ],
        LOOKALIKE_CACHE=str(tmp_path / "cache"),
    )
    assert code == 0, err
    assert open_index(out).landmarks["lon_min"].isna().all()  # chips have no place yet
    assert place_index_at_observations(out, tmp_path / "obs.csv") == 2
    index = open_index(out)
    lm = index.landmarks
    assert lm["lon_min"].iloc[0] == pytest.approx(-10.0) and lm["lat_max"].iloc[1] == pytest.approx(-19.0)
    assert lm["scene"].tolist() == index.tiles["scene"].tolist() and lm["lon_min"].isna().sum() == 2


def test_a_build_killed_while_classifying_finishes_when_run_again(tmp_path, monkeypatch):
    """Placing and classifying run after the index is committed; a kill there leaves the build's
    work folder as the mark, and the same command run again finishes them (not "already holds
    an index")."""
    from lookalike_testkit import environ

    from lookalike.workflows import indexing

    _tiny_hirise(tmp_path)
    out = tmp_path / "ix"
    args = dict(
        images=tmp_path,
        labels=tmp_path / "labels.csv",
        footprints=str(tmp_path / "obs.csv"),
        classify="hirise",
        batch_size=8,
        progress=False,
    )
    real = indexing.classify_chips

    def killed(*a, **kw):
        raise KeyboardInterrupt("killed while classifying")

    with environ(LOOKALIKE_CACHE=str(tmp_path / "cache")):
        monkeypatch.setattr(indexing, "classify_chips", killed)
        with pytest.raises(KeyboardInterrupt):
            indexing.build_index(out, **args)
        assert open_index(out).landmarks is None and len(list(out.glob(".work-*"))) == 1
        monkeypatch.setattr(indexing, "classify_chips", real)
        indexing.build_index(out, **args)
    index = open_index(out)
    assert len(index.landmarks) == 6 and index.tiles["scene"].tolist()[:2] == ["ESP_1_2", "ESP_3_4"]
    assert not list(out.glob(".work-*"))
