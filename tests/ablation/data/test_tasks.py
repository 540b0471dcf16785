"""The 8 candidate pools, checked against their definitions one query at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ablation.data.corpus import read_split
from ablation.data.tasks import POOLS, TaskMasks, TaskPools, task_pools, task_stats
from ablation.names import TASKS


def _expected_pool(split, i: int, task: str) -> set[int]:
    """The pool of query i written out by the definitions (slow, per query: the reference)."""
    q = split.queries
    n = split.n
    me = q.iloc[i]
    same_debate = lambda j: q.iloc[j]["theme"] == me["theme"] and q.iloc[j]["debate"] == me["debate"]  # noqa: E731
    same_theme = lambda j: q.iloc[j]["theme"] == me["theme"]  # noqa: E731
    same_stance = lambda j: q.iloc[j]["stance"] == me["stance"]  # noqa: E731
    scope = {"sd": same_debate, "st": same_theme, "ep": lambda j: True}[task[:2]]
    pool: set[int] = set()
    for j in range(n):
        if not scope(j):
            continue
        if task == "sdoc" or task == "sdoa":
            if same_stance(j):
                pool.add(j)
            if task == "sdoa" and not same_stance(j):
                pool.add(n + j)
        else:
            pool.add(j)
            if task.endswith("a") and j != i:
                pool.add(n + j)
    texts = [" ".join(t.split()) for t in split.candidate_texts]
    return {j for j in pool if j == i or texts[j] != texts[i]}  # no copy of the true counter


def test_masks_match_definitions(corpus: Path) -> None:
    split = read_split(corpus, "test")
    masks = TaskMasks(split)
    for task in TASKS:
        m = masks.mask(task)
        assert m.shape == (split.n, 2 * split.n)
        for i in range(split.n):
            assert set(np.flatnonzero(m[i])) == _expected_pool(split, i, task), (task, i)
        assert m[np.arange(split.n), np.arange(split.n)].all()  # true counter always in the pool
        assert not m[np.arange(split.n), split.n + np.arange(split.n)].any()  # never the query itself


def test_stats_counts(corpus: Path) -> None:
    split = read_split(corpus, "test")
    stats = task_stats(split).set_index("task")
    # 5 debates × (pro, con) × 3 pairs: a debate has 6 counters, 3 per stance. One debate's pro pair 3
    # repeats pair 1, so those two queries lose one same-debate candidate each: 2 of 90 sdoc candidates.
    assert stats.loc["sdoc", "mean_candidates"] == pytest.approx((30 * 3 - 2) / 30)
    assert stats.loc["sdc", "mean_candidates"] == pytest.approx((30 * 6 - 2) / 30)
    assert stats.loc["sda", "mean_candidates"] == pytest.approx((30 * 11 - 2) / 30)
    # the theme holding the cross-listed debate has 18 pairs, whose 6 copies sit in the other theme
    assert stats.loc["stc", "mean_candidates"] == pytest.approx((12 * 12 + 18 * 18 - 2) / 30)
    # the whole split: 14 queries lose the copy of their counter (12 cross-listed, 2 repeated)
    assert stats.loc["epa", "mean_candidates"] == pytest.approx((30 * 59 - 14) / 30)
    assert (stats["true_pairs"] == split.n).all()
    assert stats.loc["epc", "false_pairs"] == split.n * (split.n - 1) - 14
    for task in stats.index:
        expected = [len(_expected_pool(split, i, task)) for i in range(split.n)]
        assert task_pools(split).sizes(task).tolist() == expected, task


def test_pools_refuse_an_unsorted_split(corpus: Path) -> None:
    split = read_split(corpus, "test")
    theme = int((split.queries["theme"] == split.queries["theme"][0]).sum())
    order = np.r_[np.arange(1, theme), 0, np.arange(theme, split.n)]  # first pair to its theme's end: its debate splits
    moved = dataclasses.replace(
        split,
        queries=split.queries.iloc[order].reset_index(drop=True),
        counters=split.counters.iloc[order].reset_index(drop=True),
    )
    with pytest.raises(ValueError, match="debate groups are not contiguous"):
        TaskPools(moved)
    with pytest.raises(ValueError, match="theme groups are not contiguous"):
        TaskPools(dataclasses.replace(moved, queries=moved.queries.iloc[np.r_[1 : split.n, 0]].reset_index(drop=True)))
    assert TaskPools(split).bounds["debate"][0][0] == 0


def test_a_split_builds_its_pools_once(corpus: Path) -> None:
    split = read_split(corpus, "test")
    assert task_pools(split) is task_pools(split)  # every epoch's evaluation reuses them
    head = dataclasses.replace(split, queries=split.queries.iloc[:6], counters=split.counters.iloc[:6])
    assert task_pools(head) is not task_pools(split) and task_pools(head).n == 6


def test_the_pools_are_the_8_named_tasks_in_their_order() -> None:
    assert tuple(POOLS) == TASKS and len(TASKS) == 8
