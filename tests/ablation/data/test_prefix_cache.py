"""The frozen-prefix cache: the same encodings and the same training as the full encoder, built once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ablation.config import replace_path
from ablation.data.prefix_cache import PrefixStore, split_texts, verify
from ablation.data.run_data import RunData, load_run_data
from ablation.evaluation.trained import encode_sides, token_texts
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer
from tests.conftest import smoke_config

pytestmark = pytest.mark.device  # make gpu-check runs these on CUDA

FROZEN = {"model.freeze_embeddings": "true", "model.freeze_layers": 1}


@pytest.fixture()
def data(corpus: Path) -> RunData:
    return load_run_data(smoke_config(), str(corpus))


def _config(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return smoke_config(**{**FROZEN, "data.cache_dir": str(tmp_path / "cache"), **overrides})


def test_encodings_through_the_cache_equal_the_full_encoder(data: RunData, tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path), data)
    cached = encode_sides(trainer.model, *trainer.texts(data.val), 16, trainer.device)
    full = encode_sides(trainer.model, *token_texts(data.pad_id)(data.val), 16, trainer.device)
    for side_cached, side_full in zip(cached, full, strict=True):
        for key in ("pool", "proj"):
            np.testing.assert_allclose(side_cached[key], side_full[key], rtol=0, atol=2e-3)  # float16 storage
    assert len(list((tmp_path / "cache").glob("prefix-*.offsets.npy"))) == 3  # train, val, test


def test_training_with_the_cache_matches_training_without_it_step_by_step(data: RunData, tmp_path: Path) -> None:
    runs = []
    for cache in (True, False):
        rec = MemoryRecorder()
        trainer = Trainer(_config(tmp_path, **{"model.prefix_cache": cache}), data)
        trainer.fit(rec)
        runs.append((trainer.result.losses, rec))
    (cached, rec_c), (full, rec_f) = runs
    assert len(cached) == len(full) > 4
    np.testing.assert_allclose(cached, full, rtol=2e-3)  # dropout on above the prefix: the same masks
    assert rec_c.tags["digest.negatives.epoch2"] == rec_f.tags["digest.negatives.epoch2"]
    val_c, val_f = rec_c.history("val/retrieval/mrr/mean"), rec_f.history("val/retrieval/mrr/mean")
    np.testing.assert_allclose([v for _, v in val_c], [v for _, v in val_f], atol=1e-2)


def test_a_store_is_built_once_and_a_killed_build_leaves_nothing(data: RunData, tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path), data)
    tower, folder = trainer.model.query_tower, tmp_path / "again"
    tokens = data.val.cand_tokens
    calls = []
    real = tower.prefix

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in the middle of the build
        return real(*args, **kwargs)

    tower.prefix = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        PrefixStore.build_or_load(folder, tower, tokens, data.pad_id, 8, trainer.device)
    assert not list(folder.glob("*.npy"))  # no half file, under its name or a temporary one
    tower.prefix = real  # type: ignore[method-assign]
    store = PrefixStore.build_or_load(folder, tower, tokens, data.pad_id, 8, trainer.device)
    built = store.path.stat().st_mtime_ns
    tower.prefix = crash  # a finished store is read, never rebuilt
    again = PrefixStore.build_or_load(folder, tower, tokens, data.pad_id, 8, trainer.device)
    assert again.path == store.path and again.path.stat().st_mtime_ns == built
    queries, candidates = split_texts(store, data.val.split.n)
    assert candidates.lengths.tolist() == [len(t) for t in tokens]
    assert queries.lengths.tolist() == [len(t) for t in data.val.query_tokens]


SUMS = {"vectors", "offsets"}


def test_the_key_covers_weights_depth_and_tokens(corpus: Path, data: RunData, tmp_path: Path) -> None:
    def path(**overrides: object) -> Path:
        cfg = _config(tmp_path, **overrides)
        run_data = load_run_data(cfg, str(corpus)) if "model.max_length" in overrides else data
        return Trainer(cfg, run_data, run_test=False).texts(run_data.val)[1].store.path

    base = path()
    assert path() == base
    assert path(seed=2) != base  # the tiny random BERT's weights come from the seed
    assert path(**{"model.freeze_layers": 2}) != base
    assert path(**{"model.max_length": 24}) != base  # other tokens (tokenizer, max_length and texts alike)


@pytest.mark.parametrize(
    "damage", ["finite half", "truncated", "offsets missing", "digest missing", "another split's store", "no identity"]
)
def test_a_damaged_store_is_rebuilt_with_a_warning_and_gives_the_same_numbers(
    data: RunData, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = replace_path(_config(tmp_path), "train.epochs", 1)
    first = Trainer(cfg, data).fit(MemoryRecorder()).test_metrics
    stores = sorted((tmp_path / "cache").glob("prefix-*[0-9a-f].npy"), key=lambda p: p.stat().st_size)
    target = stores[-1]  # the largest: the training split's
    if damage == "finite half":  # the silent kind: finite values, a valid file, wrong numbers
        vectors = np.load(target, mmap_mode="r+")
        vectors[len(vectors) // 2 :] = 0.5
        vectors.flush()
        del vectors
    elif damage == "truncated":
        os.truncate(target, target.stat().st_size // 2)
    elif damage == "another split's store":  # complete and self-consistent, but of other texts
        other = stores[0]
        for suffix in (".npy", ".offsets.npy", ".sha256.json"):
            shutil.copy(other.with_suffix(suffix), target.with_suffix(suffix))
        assert verify(target) is None  # its bytes match its own digests: only its identity can tell
    elif damage == "no identity":  # recorded before stores carried one: accepted on its offsets, and upgraded
        sums = target.with_suffix(".sha256.json")
        sums.write_text(json.dumps({k: v for k, v in json.loads(sums.read_text()).items() if k in SUMS}))
    else:
        target.with_suffix(".offsets.npy" if damage == "offsets missing" else ".sha256.json").unlink()
    capsys.readouterr()
    again = Trainer(cfg, data).fit(MemoryRecorder()).test_metrics
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    if damage == "no identity":
        assert warnings == [] and set(json.loads(target.with_suffix(".sha256.json").read_text())) > SUMS
    else:
        assert len(warnings) == 1 and target.name in warnings[0] and "building it again" in warnings[0]
    if damage == "another split's store":
        assert "it is another store: key " in warnings[0] or "it holds other texts" in warnings[0]
    assert again == first
    assert verify(target) is None
