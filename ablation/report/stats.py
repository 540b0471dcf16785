"""Comparing two arms on the same test queries, with the variance the study has: seeds and queries.

Each arm gives a queries × seeds table of per-query scores (1.0 where the true candidate is ranked first,
or its mean over tasks). The difference of the arms' means has two sources of sampling error: which seeds
were drawn (training randomness) and which queries were drawn. Where both arms ran under the same seeds,
the comparison is paired by seed and by query: with ``D[q, s] = arm[q, s] − reference[q, s]``,

    Var(mean D) ≈ Var_s(mean_q D[·, s]) / S  +  Var_q(mean_s D[q, ·]) / Q

(the per-seed means vary with the seed effect, the per-query means with the query effect; the shared
residual term is counted in both, which errs on the wide side). The interval and the p-value use a t
distribution with Welch–Satterthwaite degrees of freedom, so 3 seeds give a wide interval, as they should.
Arms under different seeds are compared unpaired, each arm's two components added. A reference with one
column and no seed variance (the deterministic zero-shot row) is a fixed baseline. p-values are then
adjusted for the number of comparisons with Holm's step-down method, and each interval with them: the
adjusted interval of a row is taken at level 1 − α·p/p_Holm (p_Holm/p is the row's effective Holm
multiplier, at least 1), so it excludes 0 exactly when p_Holm < α, i.e. when the row is called
significant; the unadjusted 95 % interval is kept beside it. `tests/ablation/report` simulates
studies of two equal arms to check the false-positive rate, and of two different arms for power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 3
"""Fewer seeds per arm than this: the seed variance cannot be estimated, and nothing is called significant."""


@dataclass(frozen=True)
class Comparison:
    """Difference in a per-query score (arm − reference) with its 95 % CI and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n_queries: int
    n_seeds: int  # the fewer of the two arms' seeds (the reference's, if it is fixed)
    p_adjusted: float = float("nan")
    se: float = float("nan")  # standard error of `diff`
    df: float = float("nan")  # Welch–Satterthwaite degrees of freedom

    @property
    def seed_variance_known(self) -> bool:
        return self.n_seeds >= MIN_SEEDS

    @property
    def significant(self) -> bool:
        """Significant at 5 % after the adjustment, and only where the seed variance could be estimated."""
        return self.seed_variance_known and self.p_adjusted < 0.05


NO_COMPARISON = Comparison(float("nan"), float("nan"), float("nan"), float("nan"), 0, 0)


def _var(x: np.ndarray, axis: int) -> np.ndarray:
    return x.var(axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros(np.delete(x.shape, axis))


def compare(reference: pd.DataFrame, arm: pd.DataFrame, fixed_reference: bool = False) -> Comparison:
    """Compare queries × seeds tables (columns: seed labels) on their common queries. With
    `fixed_reference`, the reference's single column is a deterministic baseline (no seed variance)."""
    common = reference.index.intersection(arm.index)
    if len(common) == 0 or reference.shape[1] == 0 or arm.shape[1] == 0:
        return NO_COMPARISON
    a, r = arm.loc[common].to_numpy(float), reference.loc[common].to_numpy(float)
    q = len(common)
    seeds = [s for s in arm.columns if s in set(reference.columns)]
    if fixed_reference:
        d = a - r[:, :1]
        parts = [(_var(d.mean(0), 0) / d.shape[1], d.shape[1] - 1), (_var(d.mean(1), 0) / q, q - 1)]
        n_seeds = d.shape[1]
    elif seeds and len(seeds) == arm.shape[1] == reference.shape[1]:
        d = arm.loc[common, seeds].to_numpy(float) - reference.loc[common, seeds].to_numpy(float)
        parts = [(_var(d.mean(0), 0) / len(seeds), len(seeds) - 1), (_var(d.mean(1), 0) / q, q - 1)]
        n_seeds = len(seeds)
    else:
        d = a.mean(1, keepdims=True) - r.mean(1, keepdims=True)
        parts = [
            (_var(a.mean(0), 0) / a.shape[1], a.shape[1] - 1),
            (_var(r.mean(0), 0) / r.shape[1], r.shape[1] - 1),
            (_var(d[:, 0], 0) / q, q - 1),
        ]
        n_seeds = min(a.shape[1], r.shape[1])
    diff = float(d.mean())
    var = float(sum(v for v, _ in parts))
    if var <= 0:  # no variance at all: identical tables, or a constant difference
        p = 1.0 if diff == 0 else 0.0
        return Comparison(diff, diff, diff, p, q, n_seeds, se=0.0, df=math.inf)
    df = var**2 / sum(v**2 / k for v, k in parts if k > 0 and v > 0)
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.975, df)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Comparison(diff, diff - half, diff + half, p, q, n_seeds, se=se, df=df)


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error ≤ α for any dependence); NaN entries are left out.
    Hand-written: a dozen lines, where statsmodels would be a new dependency for this one function."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def adjusted_interval(
    diff: float, se: float, df: float, p: float, p_adjusted: float, family: int, alpha: float = 0.05
) -> tuple[float, float]:
    """The interval that agrees with the adjusted p-value: level 1 − α·p/p_adjusted (1 − α/family where p
    underflows to 0), so it excludes 0 exactly when p_adjusted < α."""
    if not all(map(math.isfinite, (diff, p, p_adjusted))) or math.isnan(se):
        return float("nan"), float("nan")
    if se == 0:
        return diff, diff
    gamma = min(alpha, alpha * p / p_adjusted) if p > 0 and p_adjusted > 0 else alpha / max(1, family)
    half = float(stats.t.ppf(1 - gamma / 2, df)) * se
    return diff - half, diff + half


def detectable(se: float, df: float, family: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference that a row with this standard error finds with `power` at the
    family-wise level α over `family` rows (Bonferroni, which Holm's first step is):
    (t_{1−α/2m, df} + t_{power, df})·se. The power quantile is t's too: with the few degrees of freedom
    that 3 seeds give, the normal one promised 80 % where simulated studies found 63 %."""
    if not math.isfinite(se) or se <= 0:
        return float("nan")
    return float(stats.t.ppf(1 - alpha / (2 * max(1, family)), df) + stats.t.ppf(power, df)) * se


def correctness(per_query: dict[str, pd.DataFrame], task: str | None, mode: str, slice_: str = "all") -> pd.DataFrame:
    """queries × seeds table (columns: seed labels) of 1.0 where the true candidate was ranked first, on
    one task, or averaged over the tasks (`task` None); only the queries of `slice_` (a per-query column)."""
    cols = {}
    for seed, frame in per_query.items():
        rows = frame[frame["mode"] == mode]
        if task is not None:
            rows = rows[rows["task"] == task]
        if slice_ != "all":
            if slice_ not in rows:
                continue
            rows = rows[rows[slice_].astype(bool)]
        hit = (rows["rank"] == 1).astype(float)
        cols[seed] = hit.groupby(rows["query_id"].to_numpy()).mean()
    return pd.DataFrame(cols)


def describe(c: Comparison, metric: str = "acc@1") -> str:
    """`+0.012 acc@1 (Holm-adjusted 95 % CI −0.010 to +0.034, Holm p = 0.21)`: the interval and p that make
    the call (the row's `low`/`high` are the adjusted interval once `adjust` ran); Holm caps p at 1."""
    if math.isnan(c.p_adjusted):
        return f"{c.diff:+.3f} {metric} (95 % CI {c.low:+.3f} to {c.high:+.3f}, p = {c.p_value:.3f})"
    return f"{c.diff:+.3f} {metric} (Holm-adjusted 95 % CI {c.low:+.3f} to {c.high:+.3f}, Holm p = {c.p_adjusted:.3f})"
