"""Retrieval and rerank metrics per task, computed over all queries with matrix operations.

Retrieval ranks every candidate of a task's pool by a similarity score. Rerank takes each query's top-K
retrieved candidates and reorders them by a pair scorer's positive-class probability; candidates past K
keep their retrieval rank. Ties count against the true candidate (pessimistic ranks), so a degenerate
model that scores everything equally gets rank = pool size, never a lucky 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ablation.config import TASKS
from ablation.corpus import Split
from ablation.tasks import TaskPools

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(query indices [M], candidate indices [M]) → positive-class probability [M], all in one call."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics keyed ``<mode>/<metric>/<task>`` (plus ``.../mean`` over tasks) and per-query rows."""

    metrics: dict[str, float]
    per_query: pd.DataFrame  # query_id, task, mode, rank, top1_id


def score_matrix(queries: np.ndarray, candidates: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Similarity of every query to every candidate: cosine, or negative L2 distance."""
    q = np.asarray(queries, dtype=np.float32)
    c = np.asarray(candidates, dtype=np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return q @ c.T
    if metric == "l2":  # |q|² + |c|² − 2 q·c in one multi-threaded addmm
        tq, tc = torch.from_numpy(q), torch.from_numpy(c)
        sq = torch.addmm((tc * tc).sum(1)[None, :], tq, tc.T, alpha=-2.0).add_((tq * tq).sum(1)[:, None])
        return sq.clamp_(min=0.0).sqrt_().neg_().numpy()
    raise ValueError(f"unknown metric {metric!r}")


def pool_view(scores: np.ndarray, pools: TaskPools, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Each query's pool scores, padded with −inf, and their candidate columns (−1 for padding)."""
    n = scores.shape[0]
    rows = np.arange(n)
    c_lo, c_hi, p_lo, p_hi, exclude_self = pools.ranges(task)
    len1, len2 = c_hi - c_lo, p_hi - p_lo
    j = np.arange(int((len1 + len2).max()))[None, :]
    in1 = j < len1[:, None]
    valid = in1 | (j < (len1 + len2)[:, None])
    cols = np.where(in1, c_lo[:, None] + j, p_lo[:, None] + j - len1[:, None])
    if exclude_self:
        valid &= cols != (n + rows)[:, None]
    cols = np.where(valid, cols, -1)
    return np.where(valid, np.take_along_axis(scores, np.maximum(cols, 0), axis=1), -np.inf), cols


def _retrieve_block(scores: np.ndarray, lo: int, hi: int, points: bool, true: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and top-k columns of queries lo..hi whose pool is counters lo..hi (and points lo..hi but
    themselves): a theme, or the whole split. Works on views of `scores`, never copies the block."""
    n = scores.shape[0]
    t = torch.from_numpy(true[lo:hi])[:, None]
    block = torch.from_numpy(scores[lo:hi, lo:hi])
    ranks = (block >= t).sum(1)
    vals, cols = torch.topk(block, min(k, hi - lo), dim=1)
    cols = cols + lo
    if points:
        pts = torch.from_numpy(scores[lo:hi, n + lo : n + hi])
        ranks += (pts >= t).sum(1) - (torch.diagonal(pts) >= t[:, 0]).long()
        p_vals, p_idx = torch.topk(pts, min(k + 1, hi - lo), dim=1)  # one spare: the query itself may be among them
        p_vals = p_vals.masked_fill(p_idx == torch.arange(hi - lo)[:, None], -torch.inf)
        vals, pick = torch.topk(torch.cat([vals, p_vals], 1), min(k, 2 * (hi - lo) - 1), dim=1)
        cols = torch.cat([cols, p_idx + n + lo], 1).gather(1, pick)
    top = np.full((hi - lo, k), -1, dtype=np.int64)
    top[:, : cols.shape[1]] = np.where(np.isfinite(vals.numpy()), cols.numpy(), -1)
    return ranks.numpy(), top


def _retrieve(vals: np.ndarray, cols: np.ndarray, true: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic rank of the true candidate and the top-k columns, best first (−1 pads short pools)."""
    ranks = (vals >= true[:, None]).sum(axis=1)
    top = torch.topk(torch.from_numpy(np.ascontiguousarray(vals)), min(k, vals.shape[1]), dim=1, sorted=True)
    idx = top.indices.numpy()
    return ranks.astype(np.int64), np.where(np.isfinite(top.values.numpy()), np.take_along_axis(cols, idx, axis=1), -1)


def _rerank(top: np.ndarray, probs: np.ndarray, retrieval_ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row of `top` by probability (retrieval order breaks ties); new true ranks and top-1."""
    n = top.shape[0]
    p = np.where(top >= 0, probs, -np.inf)
    order = np.argsort(-p, axis=1, kind="stable")
    reordered = np.take_along_axis(top, order, axis=1)
    hit = reordered == np.arange(n)[:, None]
    in_top = hit.any(axis=1)
    ranks = np.where(in_top, hit.argmax(axis=1) + 1, retrieval_ranks)
    return ranks, reordered[:, 0]


def _metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {"acc_at_1": float((ranks == 1).mean()), "mrr": float((1.0 / ranks).mean())}
    for k in ks:
        out[f"recall_at_{k}"] = float((ranks <= k).mean())
    return out


def evaluate_scores(
    split: Split,
    scores: np.ndarray,
    tasks: Sequence[str] = TASKS,
    ks: Sequence[int] = (1, 5, 10),
    scorer: PairScorer | None = None,
    rerank_k: int = 10,
) -> EvalResult:
    """Metrics of a ``n × 2n`` score matrix on every task; with `scorer`, reranked metrics too."""
    n = split.n
    if scores.shape != (n, 2 * n):
        raise ValueError(f"scores must be {n}×{2 * n}, got {scores.shape}")
    pools = TaskPools(split)
    cand_ids = np.asarray(split.candidate_ids, dtype=object)
    query_ids = split.queries["id"].to_numpy()
    true = scores[np.arange(n), np.arange(n)]
    retrieval: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tops: dict[str, np.ndarray] = {}
    for task in tasks:
        if task[:2] in ("st", "ep"):  # big pools: contiguous blocks of the score matrix, no gather
            blocks = sorted(set(zip(*pools.bounds["theme"]))) if task[:2] == "st" else [(0, n)]
            ranks, top = np.empty(n, dtype=np.int64), np.empty((n, rerank_k), dtype=np.int64)
            for lo, hi in blocks:
                ranks[lo:hi], top[lo:hi] = _retrieve_block(scores, int(lo), int(hi), task.endswith("a"), true, rerank_k)
        else:  # debate pools: small, gathered
            ranks, top = _retrieve(*pool_view(scores, pools, task), true, rerank_k)
        retrieval[task] = (ranks, top[:, 0])
        tops[task] = top
    reranked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if scorer is not None:
        keys = {task: np.arange(n)[:, None] * 2 * n + np.maximum(top, 0) for task, top in tops.items()}
        pairs = np.sort(np.concatenate([k.ravel() for k in keys.values()]))
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]  # pairs shared by several tasks are scored once
        probs = np.asarray(scorer(pairs // (2 * n), pairs % (2 * n)), dtype=np.float64)
        for task, top in tops.items():
            reranked[task] = _rerank(top, probs[np.searchsorted(pairs, keys[task])], retrieval[task][0])
    metrics: dict[str, float] = {}
    frames = []
    for mode, results in (("retrieval", retrieval), ("rerank", reranked)):
        if not results:
            continue
        for task, (ranks, top1) in results.items():
            for name, value in _metrics(ranks, ks).items():
                metrics[f"{mode}/{name}/{task}"] = value
            frames.append(
                pd.DataFrame({"query_id": query_ids, "task": task, "mode": mode, "rank": ranks, "top1_id": cand_ids[top1]})
            )
        for name in _metrics(np.ones(1), ks):
            metrics[f"{mode}/{name}/mean"] = float(np.mean([metrics[f"{mode}/{name}/{t}"] for t in results]))
    return EvalResult(metrics=metrics, per_query=pd.concat(frames, ignore_index=True))


def metrics_table(metrics: dict[str, float]) -> pd.DataFrame:
    """``<mode>/<metric>/<task>`` keys as a table: one row per (mode, task), one column per metric."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 3:
            continue
        mode, name, task = parts
        rows.setdefault((mode, task), {})[name] = value
    frame = pd.DataFrame([{"mode": m, "task": t, **v} for (m, t), v in rows.items()])
    return frame
