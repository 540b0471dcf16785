"""One evaluator interface: anything that scores a tokenised split is evaluated the same way.

The trained bi-encoder (`trained.TrainedEvaluator`) and the untrained encoder (`zeroshot.ZeroShot`) differ
only in how they turn texts into a score matrix and whether they have a pair scorer to rerank with; the
pools, ranks, metrics and slices come from one place (`ranking.evaluate_scores`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ablation.data.run_data import TokenizedSplit
from ablation.evaluation.ranking import EvalResult, PairScorer, evaluate_scores
from ablation.names import TASKS


class Evaluator(ABC):
    """Scores a tokenised split; `evaluate` turns the scores into metrics on every task and slice."""

    @abstractmethod
    def score(self, data: TokenizedSplit) -> tuple[np.ndarray, PairScorer | None]:
        """The ``n × 2n`` score matrix of the split's queries against its candidates, and a pair scorer
        for reranking (None: retrieval only)."""

    def evaluate(
        self, data: TokenizedSplit, tasks: Sequence[str] = TASKS, ks: Sequence[int] = (1, 5, 10), rerank_k: int = 10
    ) -> EvalResult:
        """Retrieval (and, with a pair scorer, reranked) metrics of `tasks` on all queries and each slice."""
        scores, scorer = self.score(data)
        return evaluate_scores(data.split, scores, tasks, ks, scorer=scorer, rerank_k=rerank_k, slices=data.slices)
