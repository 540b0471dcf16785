"""Vectorised evaluation against a per-query reference, tie handling, rerank and per-query output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ablation.data.corpus import read_split
from ablation.data.tasks import TaskMasks
from ablation.evaluation.ranking import evaluate_scores, score_matrix
from ablation.names import TASKS
from tests.conftest import assert_matches_reference


def _reference_rank(scores: np.ndarray, mask: np.ndarray, i: int) -> int:
    pool = np.flatnonzero(mask[i])
    return int(sum(scores[i, j] >= scores[i, i] for j in pool))


def test_metrics_match_a_per_query_reference(corpus: Path) -> None:
    split = read_split(corpus, "test")
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(split.n, 2 * split.n)).astype(np.float32)
    result = evaluate_scores(split, scores, ks=(1, 3))
    masks = TaskMasks(split)
    for task in TASKS:
        ranks = np.array([_reference_rank(scores, masks.mask(task), i) for i in range(split.n)])
        assert result.metrics[f"retrieval/acc_at_1/{task}"] == pytest.approx((ranks == 1).mean())
        assert result.metrics[f"retrieval/recall_at_3/{task}"] == pytest.approx((ranks <= 3).mean())
        assert result.metrics[f"retrieval/mrr/{task}"] == pytest.approx((1 / ranks).mean())
    # accuracy is over queries: every query appears once per task
    assert len(result.per_query) == split.n * len(TASKS)


@pytest.mark.parametrize("k", [1, 3, 10, 40])  # 40: past every debate pool, and most theme pools, of the fixture
def test_ranks_and_top1_match_a_dense_reference(corpus: Path, k: int) -> None:
    assert_matches_reference(read_split(corpus, "test"), k, seed=k)


def test_perfect_and_constant_scores(corpus: Path) -> None:
    split = read_split(corpus, "test")
    n = split.n
    perfect = np.zeros((n, 2 * n), dtype=np.float32)
    perfect[np.arange(n), np.arange(n)] = 1.0
    assert evaluate_scores(split, perfect).metrics["retrieval/acc_at_1/epa"] == 1.0
    flat = evaluate_scores(split, np.zeros((n, 2 * n), dtype=np.float32))
    assert flat.metrics["retrieval/acc_at_1/sdoc"] == 0.0  # ties count against the true candidate
    # flat scores: the rank is the pool size, here every candidate but the query itself and copies of the counter
    texts = [" ".join(t.split()) for t in split.candidate_texts]
    pool = np.array([2 * n - 1 - sum(t == texts[i] for t in texts[:i] + texts[i + 1 :]) for i in range(n)])
    assert (pool < 2 * n - 1).sum() == 14  # the fixture's copies of true counters are out of the pool
    assert flat.metrics["retrieval/mrr/epa"] == pytest.approx((1 / pool).mean())


def test_rerank_with_an_oracle_and_a_reversed_scorer(corpus: Path) -> None:
    split = read_split(corpus, "test")
    n = split.n
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(n, 2 * n)).astype(np.float32)
    calls = []

    def oracle(q: np.ndarray, c: np.ndarray) -> np.ndarray:
        calls.append(len(q))
        return (q == c).astype(float)

    k = 5
    res = evaluate_scores(split, scores, scorer=oracle, rerank_k=k)
    assert len(calls) == 1  # one batched call for all tasks
    retrieval = res.per_query[res.per_query["mode"] == "retrieval"].set_index(["task", "query_id"])["rank"]
    rerank = res.per_query[res.per_query["mode"] == "rerank"].set_index(["task", "query_id"])["rank"]
    # the oracle lifts every true candidate within the top k to rank 1, and leaves the rest
    assert ((rerank == 1) == (retrieval <= k)).all()
    assert (rerank[retrieval > k] == retrieval[retrieval > k]).all()
    assert res.metrics["rerank/acc_at_1/sdoc"] == pytest.approx(res.metrics["retrieval/recall_at_5/sdoc"])


def test_score_matrix_metrics() -> None:
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    c = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cos = score_matrix(q, c, "cosine")
    assert cos[0, 0] == pytest.approx(1.0) and cos[0, 1] == pytest.approx(0.0)
    l2 = score_matrix(q, c, "l2")
    assert l2[0, 0] == pytest.approx(-1.0) and l2[1, 1] == pytest.approx(-1.0)
    assert l2[0, 1] == pytest.approx(-2.0)  # squared: the same order as the distance, no square root


@pytest.mark.parametrize("twin", [1, 3])  # a same-stance and an opposite-stance counter of the query's debate
def test_rerank_counts_a_duplicate_of_the_true_candidate_against_it(corpus: Path, twin: int) -> None:
    split = read_split(corpus, "test")
    n, query = split.n, 2
    scores = np.random.default_rng(2).normal(size=(n, 2 * n)).astype(np.float32)
    masks = TaskMasks(split)

    def twin_scorer(q: np.ndarray, c: np.ndarray) -> np.ndarray:  # `twin` is a duplicate of the query's counter
        return ((q == c) | ((q == query) & (c == twin))).astype(float)

    def rerank_ranks(twin_score: float) -> dict[str, int]:
        s = scores.copy()
        s[query, query], s[query, twin] = 10.0, twin_score
        rows = evaluate_scores(split, s, scorer=twin_scorer, rerank_k=5).per_query
        rows = rows[(rows["mode"] == "rerank") & (rows["query_id"] == split.queries["id"][query])]
        return dict(zip(rows["task"], rows["rank"].astype(int), strict=True))

    # same probability and same retrieval score: wherever the twin is in the pool, the tie counts against
    # the true candidate (top-k alone orders such ties arbitrarily: it gave 1 on some tasks, 2 on others)
    assert rerank_ranks(10.0) == {task: 2 if masks.mask(task)[query, twin] else 1 for task in TASKS}
    # same probability, lower retrieval score: the true candidate stays first
    assert rerank_ranks(9.5) == {task: 1 for task in TASKS}


@pytest.mark.parametrize(("query", "twin"), [(0, 1), (1, 0)])  # the twin's column after, then before the true one
def test_a_tie_at_the_kth_score_keeps_the_true_candidate_out_of_the_rerank(corpus: Path, query: int, twin: int) -> None:
    split = read_split(corpus, "test")
    n, other = split.n, 2  # counters 0-2: the query's debate and stance, so in every task's pool
    scores = np.full((n, 2 * n), -10.0, dtype=np.float32)
    scores[np.arange(n), np.arange(n)] = 10.0
    scores[query], scores[query, other] = -10.0, 5.0
    scores[query, query] = scores[query, twin] = 3.0  # the true counter ties with its twin: pessimistic rank 3

    def oracle(q: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (q == c).astype(float)

    for k, expected in ((2, 3), (3, 1)):  # past k, a tie must not let top-k's arbitrary order pick it
        rows = evaluate_scores(split, scores, scorer=oracle, rerank_k=k).per_query
        rows = rows[rows["query_id"] == split.queries["id"][query]]
        retrieval, rerank = rows[rows["mode"] == "retrieval"], rows[rows["mode"] == "rerank"]
        assert (retrieval["rank"] == 3).all() and (rerank["rank"] == expected).all(), (k, rerank)
        assert (retrieval["top1_id"] == split.candidate_ids[other]).all()
        assert (rerank["top1_id"] == split.candidate_ids[other if expected == 3 else query]).all(), k
