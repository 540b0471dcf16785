"""Hard-negative mining over current embeddings, with a scheduled share of uniformly random negatives.

The candidate universe of the training split is ``[counters (n); points (n)]``. A negative of query ``i``
is never a text equal to the query's own text or to its counter's text (which covers its counter ``i``
and itself ``n + i``): the corpus lists many debates under several themes, and such a copy would teach
"same text = negative" (to a Siamese encoder, at distance 0). The nearest allowed candidate is the hard
negative; with the query's random rate, a uniformly random allowed candidate replaces it. Random draws are
made for every query every time, whatever the rate, so arms under one seed consume the generator alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Measured by `make bench` (neighbour index) at this corpus' size: brute force wins at dimension 128.
AUTO_INDEX = "brute"


def random_rates(steps: np.ndarray, total_steps: int, start: float, end: float | None) -> np.ndarray:
    """The random rate at each given step (0-based) of a run of `total_steps`: linear from `start` at the
    first step to `end` at the last (constant when `end` is None)."""
    end = start if end is None else end
    frac = np.asarray(steps, dtype=np.float64) / max(total_steps - 1, 1)
    return start + (end - start) * frac


@dataclass(frozen=True)
class Forbidden:
    """Per query, the sorted candidate indices it must never get as a negative, padded with ``2n``."""

    index: np.ndarray  # [n, width]
    count: np.ndarray  # [n] real entries per row (at least 2: its counter and itself)

    @classmethod
    def from_codes(cls, codes: np.ndarray) -> Forbidden:
        """From text codes of the universe: every candidate whose text equals query i's point (code of
        ``n + i``) or counter (code of ``i``)."""
        n2 = len(codes)
        n = n2 // 2
        members: dict[int, list[int]] = {}
        for j, code in enumerate(codes.tolist()):
            members.setdefault(code, []).append(j)
        rows = [sorted(set(members[codes[i]]) | set(members[codes[n + i]])) for i in range(n)]
        width = max(len(r) for r in rows)
        index = np.full((n, width), n2, dtype=np.int64)
        for i, r in enumerate(rows):
            index[i, : len(r)] = r
        return cls(index, np.array([len(r) for r in rows], dtype=np.int64))

    def contains(self, chosen: np.ndarray) -> np.ndarray:
        """Whether each query's chosen candidate is forbidden to it."""
        return (self.index == chosen[:, None]).any(axis=1)


@dataclass(frozen=True)
class Negatives:
    """Chosen negative candidate per query and what the choice looked like."""

    index: np.ndarray  # [n] candidate indices into [counters; points]
    is_random: np.ndarray  # [n] bool
    rate: float  # mean random rate over the queries
    mean_distance: float  # L2 between query and negative vectors
    hard_mean_distance: float  # the same over the mined (non-random) ones
    dup_skipped: int  # neighbours passed over because their text equals the query's or its counter's
    dup_used: int  # chosen negatives with such a text (0 unless mining is broken)

    def stats(self) -> dict[str, float]:
        return {
            "neg/random_rate": self.rate,
            "neg/fraction_random": float(self.is_random.mean()),
            "neg/mean_distance": self.mean_distance,
            "neg/hard_mean_distance": self.hard_mean_distance,
            "neg/dup_neighbours_skipped": float(self.dup_skipped),
            "neg/dup_negatives_used": float(self.dup_used),
        }


def nearest_allowed(
    query_vecs: np.ndarray, cand_vecs: np.ndarray, forbidden: Forbidden, index: str = "auto"
) -> tuple[np.ndarray, int]:
    """Per query the nearest candidate not forbidden to it, and how many nearer copies (forbidden texts
    other than its own counter and itself) were skipped in all."""
    n = len(query_vecs)
    algorithm = {"auto": AUTO_INDEX, "balltree": "ball_tree", "brute": "brute"}[index]
    k = min(forbidden.index.shape[1] + 1, len(cand_vecs))  # at least one allowed among them
    nn = NearestNeighbors(n_neighbors=k, algorithm=algorithm).fit(cand_vecs)
    _, idx = nn.kneighbors(query_vecs)
    banned = (idx[:, :, None] == forbidden.index[:, None, :]).any(axis=2)
    first = (~banned).argmax(axis=1)
    own = np.arange(n)[:, None]
    copies = banned & (idx != own) & (idx != own + n) & (np.arange(k)[None, :] < first[:, None])
    return idx[np.arange(n), first], int(copies.sum())


def random_allowed(forbidden: Forbidden, rng: np.random.Generator) -> np.ndarray:
    """Per query a uniform draw over the candidates not forbidden to it."""
    draw = rng.integers(0, 2 * len(forbidden.count) - forbidden.count)
    for col in forbidden.index.T:  # ascending per row: step over each forbidden index at or below the draw
        draw = draw + (draw >= col)
    return draw


def mine(
    query_vecs: np.ndarray,
    cand_vecs: np.ndarray,
    rates: np.ndarray | float,
    rng: np.random.Generator,
    forbidden: Forbidden,
    index: str = "auto",
) -> Negatives:
    """Hard negatives from the neighbour index, each replaced by a random one with its query's rate."""
    n = len(query_vecs)
    if len(cand_vecs) != 2 * n or len(forbidden.count) != n:
        raise ValueError(
            f"expected {2 * n} candidates and {n} forbidden rows, got {len(cand_vecs)} and {len(forbidden.count)}"
        )
    rates = np.broadcast_to(np.asarray(rates, dtype=np.float64), (n,))
    coin = rng.random(n) < rates
    random_choice = random_allowed(forbidden, rng)
    hard, skipped = nearest_allowed(query_vecs, cand_vecs, forbidden, index)
    chosen = np.where(coin, random_choice, hard)
    dist = np.linalg.norm(query_vecs - cand_vecs[chosen], axis=1)
    hard_dist = float(dist[~coin].mean()) if (~coin).any() else float("nan")
    return Negatives(
        chosen, coin, float(rates.mean()), float(dist.mean()), hard_dist, skipped, int(forbidden.contains(chosen).sum())
    )
