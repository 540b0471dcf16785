"""Retrieval and rerank metrics per task, computed over all queries with matrix operations.

Retrieval ranks every candidate of a task's pool by a similarity score. Rerank takes each query's top-K
retrieved candidates and reorders them by a pair scorer's positive-class probability; candidates past K
keep their retrieval rank. Ties count against the true candidate (pessimistic ranks), so a degenerate
model that scores everything equally gets rank = pool size, never a lucky 1. Copies of the true counter's
text are out of every pool (`tasks`); metrics are also given per query slice (`slices`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from ablation.data.corpus import Split
from ablation.data.slices import Slices
from ablation.data.tasks import POOLS, TaskPools, task_pools
from ablation.names import TASKS

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(query indices [M], candidate indices [M]) → positive-class probability [M], all in one call."""


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Metrics keyed ``<mode>/<metric>/<task>`` (plus ``.../mean`` over tasks) on all queries and
    ``<slice>/<mode>/<metric>/<task>`` on each slice, and per (mode, task) each query's rank of the true
    candidate and top-1 candidate column."""

    metrics: dict[str, float]
    ranks: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    split: Split
    slices: Slices = field(default_factory=dict)

    @property
    def slice_sizes(self) -> dict[str, int]:
        """``<slice>/queries/<task>``: how many queries each slice holds, where it holds any (an empty
        slice has no metrics either; `per_query` still marks every query)."""
        return {
            f"{name}/queries/{task}": int(mask.sum())
            for name, masks in self.slices.items()
            for task, mask in masks.items()
            if mask.any()
        }

    @cached_property
    def per_query(self) -> pd.DataFrame:
        """One row per (mode, task, query): query_id, task, mode, rank, top1_id. Built on first use, since
        validation passes need only the metrics."""
        n, keys = self.split.n, list(self.ranks)
        cand_ids = np.asarray(self.split.candidate_ids, dtype=object)
        frame = pd.DataFrame(
            {
                "query_id": np.tile(self.split.queries["id"].to_numpy(), len(keys)),
                "task": np.repeat([task for _, task in keys], n),
                "mode": np.repeat([mode for mode, _ in keys], n),
                "rank": np.concatenate([r for r, _ in self.ranks.values()]) if keys else np.zeros(0, dtype=np.int64),
                "top1_id": cand_ids[np.concatenate([t for _, t in self.ranks.values()])]
                if keys
                else np.zeros(0, dtype=object),
            }
        )
        for name, masks in self.slices.items():
            frame[name] = np.concatenate([masks[task] for _, task in keys]) if keys else np.zeros(0, dtype=bool)
        return frame


def score_matrix(queries: np.ndarray, candidates: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Similarity of every query to every candidate: cosine, or ``l2``: negative squared L2 distance, which
    orders candidates as the distance does (a square root would cost a pass and change no rank)."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    c = torch.as_tensor(np.asarray(candidates, dtype=np.float32))
    # torch, not numpy, for the matmul: numpy's BLAS threads left spinning next to torch's measurably slow
    # the torch operations that follow (2-3x on a 2-core machine)
    if metric == "cosine":
        return torch.mm(
            torch.nn.functional.normalize(q, dim=1, eps=1e-12), torch.nn.functional.normalize(c, dim=1, eps=1e-12).T
        ).numpy()
    if metric == "l2":  # −|q − c|² = [q, 1, |q|²]·[2c, −|c|², −1]: one matmul, no pass over the result
        qa = torch.cat([q, torch.ones(len(q), 1), (q * q).sum(1, keepdim=True)], dim=1)
        ca = torch.cat([2 * c, -(c * c).sum(1, keepdim=True), -torch.ones(len(c), 1)], dim=1)
        return torch.mm(qa, ca.T).numpy()
    raise ValueError(f"unknown metric {metric!r}")


class _Windows:
    """Ranks and top-k candidates of every query within its task pools, from windows of the score matrix.
    A scope's window holds each query's scores against the counters and the points of its debate, its
    theme or the whole split, as ``n × 2 × w`` (w: the largest scope, −inf past each query's own); the
    whole split is a view, never a copy. Wide scopes rank their counters and points once for the tasks
    that share them (stc/sta, epc/epa); debates (w ≤ 10 in the corpus) rank all four tasks in one stack."""

    def __init__(self, scores: torch.Tensor, pools: TaskPools, k: int, tasks: Sequence[str]) -> None:
        self.n = n = scores.shape[0]
        self.tasks = tuple(tasks)
        self.scores3 = scores.view(n, 2, n)  # [query, counters | points, index]
        self.true = scores.diagonal()
        self.pools, self.k = pools, k
        self.parts: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.debate: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def window(self, scope: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The scope's ``n × 2 × w`` window (w: its largest group, −inf past each query's own; the whole
        split: a view) and each query's first index in it."""
        lo, hi = (torch.from_numpy(b) for b in self.pools.group(scope, "scope"))
        if scope is None:
            return self.scores3, lo
        n, w = self.n, int((hi - lo).max())
        j = torch.arange(w)
        win = self.scores3.gather(2, (lo[:, None] + j).clamp_(max=n - 1)[:, None, :].expand(n, 2, w))
        return win.masked_fill_((j >= (hi - lo)[:, None])[:, None, :], -torch.inf), lo

    def _top(self, top: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
        """Top-k columns as a numpy array, −1 where the pool ran out (−inf scores)."""
        out = np.full((*top.shape[:-1], self.k), -1, dtype=np.int64)
        out[..., : top.shape[-1]] = torch.where(torch.isfinite(top), cols, -1).numpy()
        return out

    def part(self, scope: str | None, halves: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pessimistic ranks [n, h] of the true candidate, top-(k+1) scores and columns [n, h, k+1] among
        the scope's counters (half 0) and/or points (half 1, without the query itself)."""
        if (scope, halves) in self.parts:
            return self.parts[scope, halves]
        win, lo = self.window(scope)
        n, w = self.n, win.shape[2]
        vals = win[:, halves[0] : halves[-1] + 1]  # a view: halves are (0,) or (0, 1)
        ranks = (vals >= self.true[:, None, None]).sum(2, dtype=torch.int32)  # int32: measured ~2x faster
        top, idx = torch.topk(vals, min(self.k + 1, w), dim=2)
        cols = idx + lo[:, None, None] + torch.tensor(halves)[None, :, None] * n
        if 1 in halves:
            rows = torch.arange(n)
            ranks[:, 1] -= (self.scores3[rows, 1, rows] >= self.true).int()
            top[:, 1].masked_fill_(cols[:, 1] == rows[:, None] + n, -torch.inf)
        self.parts[scope, halves] = ranks, top, cols
        return self.parts[scope, halves]

    def debates(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Ranks and top-k columns of every requested debate task, from one stack of task masks over the
        debate window: a few operations in all instead of a few per task."""
        if self.debate is None:
            win, lo = self.window("debate")
            n, w = self.n, win.shape[2]
            j = torch.arange(w)
            groups = {}
            for group in ("scope", "stance", "other"):
                g_lo, g_hi = (torch.from_numpy(b) - lo for b in self.pools.group("debate", group))
                groups[group] = (j >= g_lo[:, None]) & (j < g_hi[:, None])
            tasks = [t for t in self.tasks if POOLS[t].scope == "debate"]
            masks = torch.zeros(len(tasks), n, 2, w, dtype=torch.bool)
            for mask, task in zip(masks, tasks, strict=True):
                counters, points = POOLS[task].counters, POOLS[task].points
                mask[:, 0] = groups[counters]
                if points:
                    mask[:, 1] = groups[points] & (j != (torch.arange(n) - lo)[:, None])
            vals = win.masked_fill(~masks, -torch.inf).view(len(tasks), n, 2 * w)
            ranks = (vals >= self.true[:, None]).sum(2).numpy()
            top, idx = torch.topk(vals, min(self.k, 2 * w), dim=2)
            top_cols = self._top(top, idx // w * n + lo[:, None] + idx % w)
            self.debate = {task: (ranks[i], top_cols[i]) for i, task in enumerate(tasks)}
        return self.debate

    def retrieve(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Ranks of the true candidate and top-k columns, best first (−1 pads short pools), of `task`."""
        scope, points = POOLS[task].scope, POOLS[task].points
        if scope == "debate":
            return self.debates()[task]
        both = any(POOLS[t].scope == scope and POOLS[t].points for t in self.tasks)  # counters and points in one pass
        ranks, top, cols = self.part(scope, (0, 1) if both else (0,))
        if points is None:
            return ranks[:, 0].numpy().astype(np.int64), self._top(top[:, 0, : self.k], cols[:, 0, : self.k])
        top, pick = torch.topk(top.flatten(1), min(self.k, top.shape[1] * top.shape[2]), dim=1)
        return ranks.sum(1).numpy().astype(np.int64), self._top(top, cols.flatten(1).gather(1, pick))


def _top1(top: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The retrieved top-1 column; where the true candidate shares the best score with another (top-k's
    order of ties is arbitrary), that other one, as ties count against the true candidate."""
    return np.where((top[:, 0] == np.arange(len(top))) & (ranks > 1), top[:, 1], top[:, 0])


def _rerank(
    top: np.ndarray, probs: np.ndarray, top_scores: np.ndarray, retrieval_ranks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row of `top` (any leading shape, rows of k columns; −1 pads) by probability, then
    retrieval score; where both tie (a duplicate text of the true candidate), the true candidate goes last,
    as ties count against it in retrieval too. Returns the new true ranks (the retrieval rank where the
    true candidate is not in `top`) and top-1 columns. Counts, not sorts: 10 entries per row."""
    n, k = top.shape[-2:]
    is_true = top == np.arange(n)[:, None]
    # a true candidate past rank k that top-k picked anyway, from a tie at the k-th score, is not in the
    # top k under pessimistic ranks: it must not be reranked (nor be top-1)
    tie_pick = is_true & (retrieval_ranks > k)[..., None]
    is_true &= ~tie_pick
    p = np.where((top >= 0) & ~tie_pick, probs, -np.inf)
    found = is_true.any(axis=-1)
    t = is_true.argmax(axis=-1)[..., None]
    p_t, s_t = np.take_along_axis(p, t, -1), np.take_along_axis(top_scores, t, -1)
    beats = (p > p_t) | ((p == p_t) & (top_scores >= s_t) & ~is_true)
    ranks = np.where(found, beats.sum(axis=-1) + 1, retrieval_ranks)
    best = p == p.max(axis=-1, keepdims=True)
    best &= top_scores == np.where(best, top_scores, -np.inf).max(axis=-1, keepdims=True)
    first = np.where((best & ~is_true).any(axis=-1), (best & ~is_true).argmax(axis=-1), best.argmax(axis=-1))
    return ranks, np.take_along_axis(top, first[..., None], -1)[..., 0]


MODES = ("retrieval", "rerank")


def metric_names(ks: Sequence[int]) -> list[str]:
    """The metrics computed per task and mode, as they appear in metric keys."""
    return ["acc_at_1", "mrr", *(f"recall_at_{k}" for k in ks)]


def metric_label(name: str) -> str:
    """How a metric reads in tables: `acc@1`, `MRR`, `recall@10`."""
    return "MRR" if name == "mrr" else name.replace("_at_", "@")


def _metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    values = [float((ranks == 1).mean()), float((1.0 / ranks).mean()), *(float((ranks <= k).mean()) for k in ks)]
    return dict(zip(metric_names(ks), values, strict=True))


def evaluate_scores(
    split: Split,
    scores: np.ndarray,
    tasks: Sequence[str] = TASKS,
    ks: Sequence[int] = (1, 5, 10),
    scorer: PairScorer | None = None,
    rerank_k: int = 10,
    slices: Slices | None = None,
) -> EvalResult:
    """Metrics of a ``n × 2n`` score matrix on every task, on all queries and on each of `slices`; with
    `scorer`, reranked metrics too."""
    n = split.n
    if scores.shape != (n, 2 * n):
        raise ValueError(f"scores must be {n}×{2 * n}, got {scores.shape}")
    scores = np.ascontiguousarray(scores)
    rows, cols = task_pools(split).excluded
    if len(rows):  # copies of the true counter: below every pool member, so neither ranked nor retrieved
        scores = scores.copy()
        scores[rows, cols] = -np.inf
    windows = _Windows(torch.from_numpy(scores), task_pools(split), max(rerank_k, 2), tasks)  # 2: see _top1
    retrieval = {task: windows.retrieve(task) for task in tasks}  # task → (ranks, top columns)
    reranked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if scorer is not None and retrieval:
        top = np.stack([t[:, :rerank_k] for _, t in retrieval.values()])  # [task, query, k]
        keys = np.arange(n)[:, None] * 2 * n + np.maximum(top, 0)  # flat (query, candidate) index
        pairs, slots = _unique_pairs(keys)
        probs = np.asarray(scorer(pairs // (2 * n), pairs % (2 * n)), dtype=np.float64)
        ranks, top1 = _rerank(top, probs[slots], scores.ravel()[keys], np.stack([r for r, _ in retrieval.values()]))
        reranked = {task: (ranks[i], top1[i]) for i, task in enumerate(retrieval)}
    retrieval = {task: (ranks, _top1(top, ranks)) for task, (ranks, top) in retrieval.items()}
    slices = {name: {t: masks[t] for t in retrieval} for name, masks in (slices or {}).items()}
    metrics: dict[str, float] = {}
    ranks_by: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for mode, results in zip(MODES, (retrieval, reranked), strict=True):
        ranks_by.update({(mode, task): found for task, found in results.items()})
        for prefix, masks in (("", None), *((f"{name}/", m) for name, m in slices.items())):
            per_task = {
                task: _metrics(ranks if masks is None else ranks[masks[task]], ks)
                for task, (ranks, _) in results.items()
                if masks is None or masks[task].any()
            }
            for task, values in per_task.items():
                metrics.update({f"{prefix}{mode}/{name}/{task}": v for name, v in values.items()})
            if per_task:
                for name in _metrics(np.ones(1), ks):
                    metrics[f"{prefix}{mode}/{name}/mean"] = float(np.mean([v[name] for v in per_task.values()]))
    return EvalResult(metrics=metrics, ranks=ranks_by, split=split, slices=slices)


def _unique_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique flat (query, candidate) keys, and each key's position among them: a pair in several
    tasks' top-K is scored once. A sort of the ~112 k keys beat a mark array over the n × 2n grid, whose
    fresh pages fault on every call (whole test-split evaluation, alternating: 25.5 vs 26.9 ms)."""
    pairs, slots = torch.unique(torch.from_numpy(keys), sorted=True, return_inverse=True)
    return pairs.numpy(), slots.numpy()


def metrics_table(metrics: dict[str, float]) -> pd.DataFrame:
    """``[<slice>/]<mode>/<metric>/<task>`` keys as a table: one row per (slice, mode, task), one column per
    metric; the slice of all queries is `all`."""
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3:
            parts = ["all", *parts]
        if len(parts) != 4:
            continue
        part, mode, name, task = parts
        rows.setdefault((part, mode, task), {})[name] = value
    return pd.DataFrame([{"slice": s, "mode": m, "task": t, **v} for (s, m, t), v in rows.items()])
