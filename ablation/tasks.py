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

import numpy as np
import pandas as pd

from ablation.config import TASKS
from ablation.corpus import Split

TASK_DESCRIPTIONS: dict[str, str] = {
    "sdoc": "same debate, same-stance counters",
    "sdc": "same debate, all counters",
    "sdoa": "same debate, same-stance counters + opposite-stance points",
    "sda": "same debate, all counters + other points",
    "stc": "same theme, all counters",
    "sta": "same theme, all counters + other points",
    "epc": "entire split, all counters",
    "epa": "entire split, all counters + other points",
}


POOLS: dict[str, tuple[str | None, str, str | None]] = {
    "sdoc": ("debate", "stance", None),
    "sdc": ("debate", "scope", None),
    "sdoa": ("debate", "stance", "other"),
    "sda": ("debate", "scope", "scope"),
    "stc": ("theme", "scope", None),
    "sta": ("theme", "scope", "scope"),
    "epc": (None, "scope", None),
    "epa": (None, "scope", "scope"),
}
"""Each task's pool as (scope, counter group, point group) for `TaskPools.group`: the scope is the query's
debate, theme or the whole split (None); points of the whole scope exclude the query itself."""


class TaskMasks:
    """Builds task masks for one split from its theme/debate/stance codes (vectorised, no loops over pairs)."""

    def __init__(self, split: Split) -> None:
        q = split.queries
        self.n = split.n
        self.theme = pd.factorize(q["theme"])[0]
        self.debate = pd.factorize(q["theme"] + "/" + q["debate"])[0]
        self.stance = (q["stance"] == "pro").to_numpy()
        self.excluded = split.copies(np.arange(self.n))

    def _eq(self, codes: np.ndarray) -> np.ndarray:
        return codes[:, None] == codes[None, :]

    def mask(self, task: str) -> np.ndarray:
        """The ``n × 2n`` candidate mask of `task`."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        n = self.n
        everything = np.ones((n, n), dtype=bool)
        nothing = np.zeros((n, n), dtype=bool)
        not_self = ~np.eye(n, dtype=bool)
        if task in ("sdoc", "sdc", "sdoa", "sda"):
            scope = self._eq(self.debate)
        elif task in ("stc", "sta"):
            scope = self._eq(self.theme)
        else:
            scope = everything
        same_stance = self._eq(self.stance)
        if task == "sdoc":
            counters, points = scope & same_stance, nothing
        elif task == "sdoa":
            counters, points = scope & same_stance, scope & ~same_stance
        elif task.endswith("c"):
            counters, points = scope, nothing
        else:
            counters, points = scope, scope & not_self
        mask = np.concatenate([counters, points], axis=1)
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
        scope, counters, points = POOLS[task]
        c_lo, c_hi = self.group(scope, counters)
        p_lo, p_hi = self.group(scope, points) if points else (np.zeros(self.n, dtype=np.int64),) * 2
        return c_lo, c_hi, p_lo + self.n, p_hi + self.n, points == "scope"


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


def task_stats(split: Split, tasks: tuple[str, ...] = TASKS) -> pd.DataFrame:
    """Per task: queries, mean candidates per query (true one included), true and false pairs."""
    rows = []
    for task in tasks:
        per_query = split.pools.sizes(task)
        rows.append(
            {
                "task": task,
                "queries": int(split.n),
                "mean_candidates": float(per_query.mean()),
                "true_pairs": int(split.n),
                "false_pairs": int(per_query.sum() - split.n),
                "description": TASK_DESCRIPTIONS[task],
            }
        )
    return pd.DataFrame(rows)
