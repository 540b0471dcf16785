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
                        texts = rng if not (duplicates and theme == themes[-1] and d == debates_per_theme - 1) \
                            else random.Random(f"{seed}/{stance}/{n}")  # the same in every split
                        topic = " ".join(texts.sample(WORDS, 4))
                        _write_pair(folder, stance, n, f"Point on {topic}.\n\n{' '.join(texts.choices(WORDS, k=20))} {topic}",
                                    f"Counter on {topic}: {' '.join(texts.choices(WORDS, k=20))}")
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
