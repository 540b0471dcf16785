"""Shared fixtures: a small fixture corpus in the ArguAna layout, and the real corpus from ARGUANA_DIR."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ablation.data.corpus import Split
from ablation.data.tasks import TaskMasks
from ablation.evaluation.ranking import evaluate_scores
from ablation.names import TASKS
from models.biencoder import BiEncoder, BiEncoderSpec, build_biencoder

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SMOKE = EXPERIMENTS / "smoke.yaml"
QUICK = EXPERIMENTS / "quick.yaml"
FIXTURE = ["data.themes=[]", "data.max_debates_per_theme=null"]
"""Overrides that point the smoke experiment at the whole fixture corpus."""

VOCAB = 120

WORDS = [
    "tax",
    "school",
    "health",
    "border",
    "speech",
    "police",
    "climate",
    "energy",
    "vote",
    "church",
    "science",
    "trade",
    "law",
    "army",
    "market",
    "privacy",
    "media",
    "freedom",
    "rights",
    "children",
    "prison",
    "drug",
    "sport",
    "culture",
    "family",
    "economy",
]


def _write_pair(folder: Path, stance: str, n: int, point: str, counter: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stance}{n:02d}a-point.txt").write_text(point, encoding="utf-8")
    (folder / f"{stance}{n:02d}b-counter.txt").write_text(counter, encoding="utf-8")


def make_corpus(
    root: Path,
    splits: tuple[str, ...] = ("training", "validation", "test"),
    themes: tuple[str, ...] = ("economy", "health"),
    debates_per_theme: int = 2,
    pairs_per_stance: int = 3,
    orphan_points: int = 1,
    seed: int = 0,
    duplicates: bool = True,
) -> Path:
    """Write a small corpus in the ArguAna layout; each point and its counter share topic words.

    With `duplicates`, the corpus' traps are reproduced in every split: the first debate of the first
    theme is cross-listed under the last theme as well (same debate, same texts, other line breaks), and
    the last pro pair of the second debate of the first theme repeats its first pro pair. The test
    split's last debate of the last theme has the texts of the training split's (pairs seen in training).
    """
    rng = random.Random(seed)
    for split in splits:
        for theme in themes:
            for d in range(debates_per_theme):
                debate = f"{theme}-house-would-debate-{d}"
                for stance in ("pro", "con"):
                    folder = root / split / theme / debate / stance
                    for n in range(1, pairs_per_stance + 1):
                        texts = (
                            rng
                            if not (duplicates and theme == themes[-1] and d == debates_per_theme - 1)
                            else random.Random(f"{seed}/{stance}/{n}")
                        )  # the same in every split
                        topic = " ".join(texts.sample(WORDS, 4))
                        _write_pair(
                            folder,
                            stance,
                            n,
                            f"Point on {topic}.\n\n{' '.join(texts.choices(WORDS, k=20))} {topic}",
                            f"Counter on {topic}: {' '.join(texts.choices(WORDS, k=20))}",
                        )
                    if d == 0 and stance == "pro":
                        for k in range(orphan_points):
                            (folder / f"pro{90 + k:02d}a-point.txt").write_text("An orphan point.", encoding="utf-8")
        if duplicates and len(themes) > 1:
            source = root / split / themes[0] / f"{themes[0]}-house-would-debate-0"
            for path in sorted(source.rglob("*.txt")):
                copy = root / split / themes[-1] / source.name / path.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(path.read_text(encoding="utf-8").replace(" ", "  ", 1) + "\n", encoding="utf-8")
        if duplicates and debates_per_theme > 1 and pairs_per_stance > 1:
            folder = root / split / themes[0] / f"{themes[0]}-house-would-debate-1" / "pro"
            point, counter = ((folder / f"pro01{x}.txt").read_text(encoding="utf-8") for x in ("a-point", "b-counter"))
            _write_pair(folder, "pro", pairs_per_stance, point, counter)
    return root


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A fixture corpus: 3 splits × 2 themes × 2 debates × 2 stances × 3 pairs, one orphan point per theme,
    one debate cross-listed under both themes (30 pairs per split), a repeated pair, seen test pairs."""
    return make_corpus(tmp_path / "corpus")


@dataclass(frozen=True)
class SmokeStudy:
    """A finished smoke study on the fixture corpus: its store, folders, summary lines and run counts."""

    uri: str
    root: Path
    corpus: Path
    summary: str
    runs_after_first: int
    runs_after_rerun: int


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> SmokeStudy:
    """The smoke study, run once per session for the tests that only read it, then run again (a finished
    study must do no work and add no runs on a rerun). Tests that change a store copy it first."""
    from ablation.config import load_config
    from ablation.study.runner import run_study
    from ablation.tracking.store import Tracker

    root = tmp_path_factory.mktemp("smoke-study")
    corpus = make_corpus(root / "corpus")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(SMOKE, FIXTURE)
    summary = run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(root / "run"))
    first = len(Tracker(uri).search("smoke", {}))
    run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(root / "run"))
    return SmokeStudy(uri, root, corpus, summary, first, len(Tracker(uri).search("smoke", {})))


REQUIRE_ALL = "ABLATION_REQUIRE_ALL"
"""Set (by `make test` and CI): a test whose corpus, browser or file-system feature is missing fails instead
of skipping."""


def missing(why: str) -> None:
    """Skip for a missing corpus, browser or file-system feature on a developer's machine; fail where every
    test must run."""
    if os.environ.get(REQUIRE_ALL):
        pytest.fail(f"{why}, and {REQUIRE_ALL} is set: every test must run here")
    pytest.skip(why)


@pytest.fixture(scope="session")
def real_corpus() -> Path:
    """The real corpus in ARGUANA_DIR. Unset: skipped on a developer's machine, failed where REQUIRE_ALL is
    set (CI and `make test` set it). Set but unreadable: the test fails."""
    where = os.environ.get("ARGUANA_DIR")
    if not where:
        missing("ARGUANA_DIR is not set (CI sets it to the shared corpus)")
    path = Path(where)
    if not (path / "test").is_dir() and not path.is_file():
        pytest.fail(f"ARGUANA_DIR={where} is set but not a readable ArguAna corpus")
    return path


def tiny_biencoder(arm: str, seed: int = 0) -> BiEncoder:
    """A tiny random bi-encoder of `arm` (vocabulary of 120, head width 8), from the torch RNG at `seed`."""
    torch.manual_seed(seed)
    return build_biencoder(BiEncoderSpec(name="tiny-random", sharing=arm, max_length=16, proj_dim=8), VOCAB)


def token_batch(seed: int) -> dict[str, torch.Tensor]:
    """4 random sequences of 10 tokens."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(5, VOCAB, (4, 10), generator=g),
        "attention_mask": torch.ones(4, 10, dtype=torch.long),
    }


def device_under_test() -> str:
    """The device tests train on: ABLATION_TEST_DEVICE (`make gpu-check` sets cuda), else cpu. A device that
    is asked for but missing fails the tests that use it; nothing skips."""
    return os.environ.get("ABLATION_TEST_DEVICE", "cpu")


def smoke_config(**overrides: object):  # type: ignore[no-untyped-def]
    """The smoke experiment on the whole fixture corpus, 2 epochs, on `device_under_test()`, with `key=value`
    overrides."""
    from ablation.config import load_config

    return load_config(
        SMOKE,
        [
            *FIXTURE,
            "train.epochs=2",
            f"train.device={device_under_test()}",
            *(f"{k}={v}" for k, v in overrides.items()),
        ],
    )


def hashed_scorer(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """A deterministic pair scorer with distinct probabilities, unrelated to the retrieval scores."""
    return np.sin(q * 12.9898 + c * 78.233) * 0.5 + 0.5


def reference_ranks(split: Split, scores: np.ndarray, k: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per (mode, task): true ranks and top-1 columns, query by query from the dense task masks (scores
    without ties): retrieval sorts the pool; rerank sorts its top k by `hashed_scorer`, then by score."""
    masks, n, out = TaskMasks(split), split.n, {}
    for task in TASKS:
        mask = masks.mask(task)
        ranks = {mode: np.zeros(n, dtype=np.int64) for mode in ("retrieval", "rerank")}
        top1 = {mode: np.zeros(n, dtype=np.int64) for mode in ("retrieval", "rerank")}
        for i in range(n):
            pool = np.flatnonzero(mask[i])
            order = pool[np.argsort(-scores[i, pool], kind="stable")]
            ranks["retrieval"][i] = int(np.flatnonzero(order == i)[0]) + 1
            top = order[:k]
            top = top[np.lexsort((-scores[i, top], -hashed_scorer(np.full(len(top), i), top)))]
            ranks["rerank"][i] = int(np.flatnonzero(top == i)[0]) + 1 if i in top else ranks["retrieval"][i]
            top1["retrieval"][i], top1["rerank"][i] = order[0], top[0]
        for mode in ranks:
            out[mode, task] = ranks[mode], top1[mode]
    return out


def assert_matches_reference(split: Split, k: int, seed: int) -> None:
    scores = np.random.default_rng(seed).normal(size=(split.n, 2 * split.n)).astype(np.float32)
    result = evaluate_scores(split, scores, scorer=hashed_scorer, rerank_k=k)
    for key, (ranks, top1) in reference_ranks(split, scores, k).items():
        assert np.array_equal(result.ranks[key][0], ranks), key
        assert np.array_equal(result.ranks[key][1], top1), key
