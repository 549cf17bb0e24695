"""Fine-tuning from cached stem activations: the cached path equals the full network, test-time
views make a model invariant to rotating its input, and tails save, load and refuse what does
not fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lookalike.errors import ModelError
from lookalike.indexer.encoding import classifier_encoder, encoder_fits
from lookalike.indexer.features import stem_activations
from lookalike.indexer.image_folders import load_image
from lookalike.models.backbones import create_backbone
from lookalike.models.classifier import ProbeClassifier
from lookalike.models.finetune import (
    FinetuneConfig,
    TailClassifier,
    finetune_tail,
    load_tail,
    round_tail,
    tail_logits,
    tail_state,
)

# real models, subprocesses and whole builds: `make test` runs these, `make test-fast` does not
pytestmark = pytest.mark.slow

CUT = 14


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path_factory.getbasetemp() / "finetune-cache"))


@pytest.fixture(scope="module")
def crops(data_dir):
    """Four real HiRISE v1 val crops (two classes) and their labels table."""
    root = data_dir / "hirise_v1"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"{root}/labels.csv not found in the shared data folder")
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    table = table[(table["split"] == "val") & table["label"].isin(["crater", "edge"])]
    return root, table.groupby("label").head(2).reset_index(drop=True)


def _perturbed_model(
    n_classes: int = 3, views: int = 1, seed: int = 0
) -> tuple[ProbeClassifier, TailClassifier]:
    """A classifier whose tail differs from ImageNet's (so the test sees the tail used) and
    the training-side module holding the same weights."""
    torch.manual_seed(seed)
    backbone = create_backbone()
    module = TailClassifier(backbone, CUT, n_classes)
    with torch.no_grad():
        for p in module.tail.parameters():
            p.mul_(1 + 0.2 * torch.randn_like(p))
        module.head.weight.normal_(0, 0.05)
    state = round_tail(backbone, CUT)  # the module now holds the weights as stored
    dim = backbone.spec.num_features
    model = ProbeClassifier(
        [f"c{i}" for i in range(n_classes)],
        np.zeros(dim, np.float32),
        np.ones(dim, np.float32),
        [module.head.weight.detach().numpy()],
        [module.head.bias.detach().numpy()],
        views=views,
        tail=state,
        cut=CUT,
    )
    module.head.weight.data = torch.from_numpy(model.weights[0].copy())
    return model, module.eval()


def test_cached_path_gives_the_full_networks_logits(crops):
    """Stem activations cached in float16, run through the tail, against the full fine-tuned
    network as users run it (BatchNorm folded, ONNX Runtime when installed): logits agree to
    0.05 absolute (float16 rounding of the cache), the predicted class always."""
    root, table = crops
    model, module = _perturbed_model()
    acts = stem_activations(root, table, cut=CUT, views=8, progress=False)
    assert acts.shape[:2] == (len(table), 8) and acts.dtype == np.float16
    cached = tail_logits(module, acts)[:, 0]
    encoder = classifier_encoder(model)
    full = model.logits(encoder.features(np.stack([load_image(root / p, 224) for p in table["path"]])))
    assert np.abs(cached - full).max() < 0.05
    assert (cached.argmax(1) == full.argmax(1)).all()
    # the tail changes the features: an ImageNet encoder would give other logits
    plain = classifier_encoder(
        ProbeClassifier(model.classes, model.mean, model.std, model.weights, model.biases)
    )
    assert (
        np.abs(
            model.logits(plain.features(np.stack([load_image(root / table["path"][0], 224)]))) - full[:1]
        ).max()
        > 0.05
    )


def test_every_cached_view_is_its_rotation(crops):
    """View v of the cache is the stem's output for the image turned/mirrored as ORIENTATIONS[8][v]."""
    root, table = crops
    model, module = _perturbed_model()
    acts = stem_activations(root, table.head(1), cut=CUT, views=8, progress=False)
    image = load_image(root / table["path"][0], 224)
    encoder = classifier_encoder(model, runtime="torch")
    from lookalike.indexer.defaults import ORIENTATIONS

    for v, (turns, mirror) in enumerate(ORIENTATIONS[8]):
        turned = np.rot90(image, turns)  # numpy and torch turn the same way on (H, W) / (H, W) dims
        turned = turned[:, ::-1] if mirror else turned
        full = model.logits(encoder.features(turned[None].copy()))
        assert np.abs(tail_logits(module, acts[:, v : v + 1])[0, 0] - full[0]).max() < 0.05, v


def test_test_time_views_make_the_model_invariant_to_rotation(crops):
    root, table = crops
    model, _ = _perturbed_model(views=8)
    encoder = classifier_encoder(model)
    image = load_image(root / table["path"][0], 224)
    variants = [image, np.rot90(image), np.rot90(image, 2), image[:, ::-1], np.rot90(image[::-1])]
    proba = model.predict_proba(encoder.features(np.stack([v.copy() for v in variants])))
    assert np.abs(proba - proba[0]).max() < 1e-4
    single, _ = _perturbed_model(views=1)
    one = single.predict_proba(classifier_encoder(single).features(np.stack([v.copy() for v in variants])))
    assert np.abs(one - one[0]).max() > 1e-3  # without them it is not


def test_tail_survives_saving_and_loading(tmp_path):
    model, _ = _perturbed_model(views=8)
    model.save(tmp_path / "m.npz")
    loaded = ProbeClassifier.load(tmp_path / "m.npz")
    assert loaded.views == 8 and loaded.cut == CUT and loaded.features_id() == model.features_id()
    assert set(loaded.tail) == set(model.tail)
    assert all(np.array_equal(loaded.tail[k], model.tail[k]) for k in model.tail)
    encoder = classifier_encoder(loaded)
    assert encoder_fits(encoder, model) and encoder.views == 8
    assert not encoder_fits(
        classifier_encoder(
            ProbeClassifier(model.classes, model.mean, model.std, model.weights, model.biases)
        ),
        model,
    )
    assert (tmp_path / "m.npz").stat().st_size < 2e6


def test_a_tail_that_does_not_fit_is_refused():
    model, _ = _perturbed_model()
    backbone = create_backbone()
    with pytest.raises(ModelError, match="does not fit"):
        load_tail(backbone, model.tail, CUT + 1)
    broken = dict(model.tail)
    key = next(k for k, v in broken.items() if v.ndim == 4)
    broken[key] = broken[key][:1]
    with pytest.raises(ModelError, match="shape"):
        load_tail(backbone, broken, CUT)
    with pytest.raises(ModelError, match="cut"):
        TailClassifier(backbone, 0, 2)


def test_finetune_learns_a_separable_toy_problem():
    """Two classes of random activations shifted apart: a few steps reach 100% training
    accuracy, the tail changes, and the loss falls."""
    backbone = create_backbone()
    before = tail_state(backbone, 19)
    acts, ids = _toy_problem()
    model, report = finetune_tail(
        acts, ids, 2, backbone, FinetuneConfig(cut=19, epochs=8, batch_size=16), progress=False
    )
    assert report["loss_per_epoch"][-1] < report["loss_per_epoch"][0]
    assert (tail_logits(model, acts).mean(1).argmax(1) == ids).all()
    after = tail_state(backbone, 19)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ModelError, match="activations"):
        finetune_tail(acts[:, 0], ids, 2, backbone, FinetuneConfig(cut=19), progress=False)


def _toy_problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.repeat([0, 1], 16)
    acts = rng.normal(0, 1, (32, 2, 320, 7, 7)).astype(np.float16)
    acts[ids == 1] += 1.5
    return acts, ids


def test_an_interrupted_finetune_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Killed after its second epoch, the training resumes from its checkpoint at epoch 3 and
    ends with the weights of an uninterrupted run; a checkpoint of other settings is ignored."""
    import lookalike.models.finetune as finetune

    acts, ids = _toy_problem()
    cfg = FinetuneConfig(cut=19, epochs=4, batch_size=16)
    whole, report = finetune_tail(acts, ids, 2, create_backbone(), cfg, progress=False)
    assert report["resumed_after_epoch"] == 0

    checkpoint = tmp_path / "run.pt"
    save = finetune._save_checkpoint
    saved = []

    def save_then_die(path, state):
        save(path, state)
        saved.append(state["epoch"])
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune_tail(acts, ids, 2, create_backbone(), cfg, progress=False, checkpoint=checkpoint)
    monkeypatch.setattr(finetune, "_save_checkpoint", save)
    assert saved == [1, 2] and checkpoint.is_file()

    resumed, report = finetune_tail(
        acts, ids, 2, create_backbone(), cfg, progress=False, checkpoint=checkpoint
    )
    assert report["resumed_after_epoch"] == 2 and len(report["loss_per_epoch"]) == 4
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

    # another training's checkpoint (here: more epochs) is not resumed from
    longer = FinetuneConfig(cut=19, epochs=5, batch_size=16)
    _, report = finetune_tail(acts, ids, 2, create_backbone(), longer, progress=False, checkpoint=checkpoint)
    assert report["resumed_after_epoch"] == 0
    checkpoint.write_bytes(b"torn")
    assert (
        finetune_tail(acts, ids, 2, create_backbone(), cfg, progress=False, checkpoint=checkpoint)[1][
            "resumed_after_epoch"
        ]
        == 0
    )


def test_stem_cache_resumes_from_its_chunks(crops, tmp_path, monkeypatch):
    """A cache interrupted after its first chunk is completed by the next call, which keeps the
    chunk already written and gives the same activations."""
    root, table = crops
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    first = stem_activations(root, table, cut=CUT, views=2, chunk=2, progress=False)
    chunks = sorted(tmp_path.rglob("chunk-*.npy"))
    assert len(chunks) == 2 and first.shape[:2] == (4, 2)
    chunks[1].unlink()
    kept = chunks[0].stat().st_mtime_ns
    again = stem_activations(root, table, cut=CUT, views=2, chunk=2, progress=False)
    assert np.array_equal(first, again)
    assert chunks[1].is_file() and chunks[0].stat().st_mtime_ns == kept


def test_stem_cache_remakes_a_chunk_of_the_wrong_length(crops, tmp_path, monkeypatch):
    """A chunk written with another chunk size (or truncated) is not mixed in: it is made again."""
    root, table = crops
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    first = stem_activations(root, table, cut=CUT, views=2, chunk=2, progress=False)
    chunk = sorted(tmp_path.rglob("chunk-*.npy"))[0]
    np.save(chunk, first[:1])  # one row where two belong
    again = stem_activations(root, table, cut=CUT, views=2, chunk=2, progress=False)
    assert np.array_equal(first, again)
    chunk.write_bytes(b"not an array")
    assert np.array_equal(first, stem_activations(root, table, cut=CUT, views=2, chunk=2, progress=False))
