"""Shared fixtures: a small fixture corpus in the ArguAna layout, and the real corpus from ARGUANA_DIR."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

WORDS = (
    "tax school health border speech police climate energy vote church science trade law army "
    "market privacy media freedom rights children prison drug sport culture family economy"
).split()


def make_corpus(
    root: Path,
    splits: tuple[str, ...] = ("training", "validation", "test"),
    themes: tuple[str, ...] = ("economy", "health"),
    debates_per_theme: int = 2,
    pairs_per_stance: int = 3,
    orphan_points: int = 1,
    seed: int = 0,
) -> Path:
    """Write a small corpus in the ArguAna layout; each point and its counter share topic words."""
    rng = random.Random(seed)
    for split in splits:
        for theme in themes:
            for d in range(debates_per_theme):
                debate = f"{theme}-house-would-debate-{d}"
                for stance in ("pro", "con"):
                    folder = root / split / theme / debate / stance
                    folder.mkdir(parents=True, exist_ok=True)
                    for n in range(1, pairs_per_stance + 1):
                        topic = " ".join(rng.sample(WORDS, 4))
                        (folder / f"{stance}{n:02d}a-point.txt").write_text(
                            f"Point on {topic}.\n\n{' '.join(rng.choices(WORDS, k=20))} {topic}", encoding="utf-8")
                        (folder / f"{stance}{n:02d}b-counter.txt").write_text(
                            f"Counter on {topic}: {' '.join(rng.choices(WORDS, k=20))}", encoding="utf-8")
                    if d == 0 and stance == "pro":
                        for k in range(orphan_points):
                            (folder / f"pro{90 + k:02d}a-point.txt").write_text("An orphan point.", encoding="utf-8")
    return root


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A fixture corpus: 3 splits × 2 themes × 2 debates × 2 stances × 3 pairs, one orphan point per theme."""
    return make_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def real_corpus() -> Path:
    """The real corpus in ARGUANA_DIR. Unset: skipped (CI sets it). Set but unreadable: the test fails."""
    where = os.environ.get("ARGUANA_DIR")
    if not where:
        pytest.skip("ARGUANA_DIR is not set (CI sets it to the shared corpus)")
    path = Path(where)
    if not (path / "test").is_dir() and not path.is_file():
        pytest.fail(f"ARGUANA_DIR={where} is set but not a readable ArguAna corpus")
    return path
