"""The 8 candidate pools of Wachsmuth et al. (2018), as boolean masks over a split's candidate universe.

For a split with ``n`` pairs the universe is ``[counters (n); points (n)]``; the mask of a task is an
``n × 2n`` boolean matrix whose row ``i`` marks the candidates query ``i`` is ranked against. The true
candidate (column ``i``) is always in the pool; the query itself (column ``n + i``) never is, and neither
is any other candidate whose text equals the true counter's text: the corpus lists some debates under
several themes, and the official pools leave such copies out (with them, the paper's mean pool sizes are
not reproduced, and a pessimistic rank could never be 1). Copies of the query's own text stay, as in the
official pair files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablation.data.corpus import Split
from ablation.names import TASKS


@dataclass(frozen=True)
class Pool:
    """A task's pool: the counters of `counters` and the points of `points` (None: no points) within
    `scope`, the query's debate, its theme or the whole split (None). Groups are `scope` (all of it),
    `stance` (the query's own stance block of its debate) or `other` (the opposite stance block)."""

    scope: str | None
    counters: str
    points: str | None
    description: str


POOLS: dict[str, Pool] = {
    "sdoc": Pool("debate", "stance", None, "same debate, same-stance counters"),
    "sdc": Pool("debate", "scope", None, "same debate, all counters"),
    "sdoa": Pool("debate", "stance", "other", "same debate, same-stance counters + opposite-stance points"),
    "sda": Pool("debate", "scope", "scope", "same debate, all counters + other points"),
    "stc": Pool("theme", "scope", None, "same theme, all counters"),
    "sta": Pool("theme", "scope", "scope", "same theme, all counters + other points"),
    "epc": Pool(None, "scope", None, "entire split, all counters"),
    "epa": Pool(None, "scope", "scope", "entire split, all counters + other points"),
}
"""The pools of the 8 tasks (`names.TASKS`, in that order); points of the whole scope exclude the query itself."""


class TaskMasks:
    """Dense ``n × 2n`` masks of the task pools, from theme/debate/stance codes: the simple reference that
    the contiguous ranges of `TaskPools` are checked against (and the old per-pair loops of `make bench`)."""

    def __init__(self, split: Split) -> None:
        q = split.queries
        self.n = split.n
        self.codes = {"theme": pd.factorize(q["theme"])[0], "debate": pd.factorize(q["theme"] + "/" + q["debate"])[0]}
        self.stance = (q["stance"] == "pro").to_numpy()
        self.excluded = split.copies(np.arange(self.n))

    def _group(self, scope: str | None, group: str | None) -> np.ndarray:
        n = self.n
        if group is None:
            return np.zeros((n, n), dtype=bool)
        inside = (
            np.ones((n, n), dtype=bool) if scope is None else self.codes[scope][:, None] == self.codes[scope][None, :]
        )
        same_stance = self.stance[:, None] == self.stance[None, :]
        return inside & {"scope": True, "stance": same_stance, "other": ~same_stance}[group]

    def mask(self, task: str) -> np.ndarray:
        """The ``n × 2n`` candidate mask of `task`."""
        if task not in POOLS:
            raise ValueError(f"unknown task {task!r}")
        pool = POOLS[task]
        points = self._group(pool.scope, pool.points) & ~np.eye(self.n, dtype=bool)
        mask = np.concatenate([self._group(pool.scope, pool.counters), points], axis=1)
        rows, cols = self.excluded
        mask[rows, cols] = False
        return mask


class TaskPools:
    """Each task's pool as at most two contiguous column ranges and one excluded column per query.

    Splits are sorted by theme, debate, stance and number, so every debate, theme and same-stance group
    is a contiguous run of indices; this makes evaluation O(pool) per query instead of O(split).
    """

    def __init__(self, split: Split) -> None:
        q = split.queries
        self.n = n = split.n
        self.codes = split.text_codes
        self.excluded = split.copies(np.arange(n))
        """(query, column) of every copy of a query's true counter: out of every pool."""
        self.bounds = {}
        starts = np.zeros(n, dtype=bool)
        starts[:1] = True
        key = np.zeros(n, dtype=np.int64)
        for name in ("theme", "debate", "stance"):  # each nested in the one before
            codes, uniques = pd.factorize(q[name])
            starts[1:] |= codes[1:] != codes[:-1]
            key = key * len(uniques) + codes
            run = np.cumsum(starts) - 1
            lo = np.flatnonzero(starts)
            if len(lo) != len(np.unique(key)):
                raise ValueError(f"split is not sorted: {name} groups are not contiguous")
            hi = np.r_[lo[1:], n]
            self.bounds[name] = (lo[run], hi[run])

    def group(self, scope: str | None, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) per query of a group of indices: the query's `scope` (its debate, its theme, or the
        whole split for None) or, with a debate scope, the query's own stance block or the other one."""
        n = self.n
        lo, hi = self.bounds[scope] if scope else (np.zeros(n, dtype=np.int64), np.full(n, n, dtype=np.int64))
        if group == "scope":
            return lo, hi
        s_lo, s_hi = self.bounds["stance"]
        if group == "stance":
            return s_lo, s_hi
        own_first = s_lo == lo  # the other stance block of the debate: after or before the own one
        return np.where(own_first, s_hi, lo), np.where(own_first, hi, s_lo)

    def ranges(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """(counter start, counter end, point start, point end, exclude self) per query; points offset by n."""
        pool = POOLS[task]
        c_lo, c_hi = self.group(pool.scope, pool.counters)
        p_lo, p_hi = self.group(pool.scope, pool.points) if pool.points else (np.zeros(self.n, dtype=np.int64),) * 2
        return c_lo, c_hi, p_lo + self.n, p_hi + self.n, pool.points == "scope"

    def contains(self, task: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether candidate ``cols[k]`` is in the pool of query ``rows[k]`` for `task`."""
        copy_of_true = (self.codes[cols] == self.codes[rows]) & (cols != rows)
        return self.contains_range(task, rows, cols) & ~copy_of_true

    def sizes(self, task: str) -> np.ndarray:
        """Candidates per query in the pool of `task`, the true one included."""
        c_lo, c_hi, p_lo, p_hi, exclude_self = self.ranges(task)
        rows, cols = self.excluded
        dropped = np.bincount(rows[self.contains_range(task, rows, cols)], minlength=self.n)
        return (c_hi - c_lo) + (p_hi - p_lo) - int(exclude_self) - dropped

    def contains_range(self, task: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether ``cols[k]`` lies in the ranges of query ``rows[k]``'s pool before copies are left out."""
        c_lo, c_hi, p_lo, p_hi, exclude_self = self.ranges(task)
        inside = ((cols >= c_lo[rows]) & (cols < c_hi[rows])) | ((cols >= p_lo[rows]) & (cols < p_hi[rows]))
        return inside & ~(exclude_self & (cols == rows + self.n))


def task_pools(split: Split) -> TaskPools:
    """The split's task pools, built on first use and kept with the split: every evaluation of a split
    (one per epoch) needs them."""
    pools = split.derived.get("pools")
    if pools is None:
        pools = split.derived["pools"] = TaskPools(split)
    return pools  # type: ignore[return-value]


def task_stats(split: Split, tasks: tuple[str, ...] = TASKS) -> pd.DataFrame:
    """Per task: queries, mean candidates per query (true one included), true and false pairs."""
    rows = []
    for task in tasks:
        per_query = task_pools(split).sizes(task)
        rows.append(
            {
                "task": task,
                "queries": int(split.n),
                "mean_candidates": float(per_query.mean()),
                "true_pairs": int(split.n),
                "false_pairs": int(per_query.sum() - split.n),
                "description": POOLS[task].description,
            }
        )
    return pd.DataFrame(rows)
