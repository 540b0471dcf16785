"""Paired comparison of two arms over the same test queries: bootstrap CI and sign-flip p-value.

Per query, correctness (true candidate at rank 1) is averaged over each arm's seeds; the per-query
difference is then resampled over queries (bootstrap, for the 95 % CI) and sign-flipped (randomisation
test of "no difference", for the p-value). Both keep the pairing: the same query enters both arms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Comparison:
    """Difference in accuracy@1 (arm − reference) with its 95 % CI and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n_queries: int

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def correctness(per_query: list[pd.DataFrame], task: str, mode: str) -> pd.DataFrame:
    """queries × seeds table of 1.0 where the true candidate was ranked first (one column per seed run)."""
    cols = {}
    for i, frame in enumerate(per_query):
        rows = frame[(frame["task"] == task) & (frame["mode"] == mode)]
        cols[i] = pd.Series((rows["rank"] == 1).astype(float).to_numpy(), index=rows["query_id"].to_numpy())
    return pd.DataFrame(cols)


def paired_comparison(reference: pd.DataFrame, arm: pd.DataFrame, n_resamples: int = 10000, seed: int = 0) -> Comparison:
    """Compare per-query correctness tables (rows: queries, columns: seeds) on their common queries."""
    common = reference.index.intersection(arm.index)
    d = (arm.loc[common].mean(axis=1) - reference.loc[common].mean(axis=1)).to_numpy()
    n = len(d)
    if n == 0:
        return Comparison(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_resamples)
    null = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)
    for s in range(0, n_resamples, chunk):
        e = min(n_resamples, s + chunk)
        boots[s:e] = d[rng.integers(0, n, size=(e - s, n))].mean(axis=1)
        null[s:e] = (d * rng.choice([-1.0, 1.0], size=(e - s, n))).mean(axis=1)
    diff = float(d.mean())
    p = (np.sum(np.abs(null) >= abs(diff) - 1e-12) + 1) / (n_resamples + 1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return Comparison(diff, float(low), float(high), float(min(1.0, p)), n)


def sentence(task: str, arm: str, reference: str, c: Comparison) -> str:
    """One plain sentence on the comparison."""
    if c.n_queries == 0:
        return f"{task}: no common queries, no comparison."
    head = (f"{task}: {arm} − {reference} = {c.diff:+.3f} acc@1 (95 % CI {c.low:+.3f} to {c.high:+.3f}, "
            f"p = {c.p_value:.3f}, {c.n_queries} queries)")
    if not c.significant:
        return f"{head}: not significant; these runs do not show a difference."
    better = arm if c.diff > 0 else reference
    return f"{head}: significant at the 5 % level; {better} is better on this task."
