"""Hard-negative mining over current embeddings, with a decaying share of uniformly random negatives.

The candidate universe of the training split is ``[counters (n); points (n)]``. For query ``i`` the
nearest candidate that is neither its own counter (``i``) nor itself (``n + i``) is its hard negative;
with probability ``random_rate`` a uniformly random allowed candidate replaces it. Random draws are made
for every query every time, whatever the rate, so arms under one seed consume the generator identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Measured by `make bench` (neighbour index) at this corpus' size: brute force wins at dimension 128.
AUTO_INDEX = "brute"


def random_rate_at(epoch: int, rate: float, decay: float) -> float:
    """The random rate of an epoch (0-based): linear decay from `rate`, floored at 0."""
    return max(0.0, rate - decay * epoch)


@dataclass(frozen=True)
class Negatives:
    """Chosen negative candidate per query and what the choice looked like."""

    index: np.ndarray  # [n] candidate indices into [counters; points]
    is_random: np.ndarray  # [n] bool
    rate: float
    mean_distance: float  # L2 between query and negative vectors
    hard_mean_distance: float  # the same over the mined (non-random) ones

    def stats(self) -> dict[str, float]:
        return {
            "neg/random_rate": self.rate,
            "neg/fraction_random": float(self.is_random.mean()),
            "neg/mean_distance": self.mean_distance,
            "neg/hard_mean_distance": self.hard_mean_distance,
        }


def nearest_allowed(query_vecs: np.ndarray, cand_vecs: np.ndarray, index: str = "auto") -> np.ndarray:
    """Per query the nearest candidate other than its counter (i) and itself (n + i)."""
    n = len(query_vecs)
    algorithm = {"auto": AUTO_INDEX, "balltree": "ball_tree", "brute": "brute"}[index]
    nn = NearestNeighbors(n_neighbors=min(3, len(cand_vecs)), algorithm=algorithm).fit(cand_vecs)
    _, idx = nn.kneighbors(query_vecs)
    own = np.arange(n)[:, None]
    allowed = (idx != own) & (idx != own + n)
    return idx[np.arange(n), allowed.argmax(axis=1)]  # at most 2 excluded among 3 neighbours


def random_allowed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per query a uniform draw over the 2n − 2 allowed candidates (its counter and itself skipped)."""
    draw = rng.integers(0, 2 * n - 2, size=n)
    own = np.arange(n)
    lo, hi = own, own + n  # excluded, lo < hi
    draw = draw + (draw >= lo)
    return draw + (draw >= hi)


def mine(query_vecs: np.ndarray, cand_vecs: np.ndarray, rate: float, rng: np.random.Generator, index: str = "auto") -> Negatives:
    """Hard negatives from the neighbour index, replaced by random ones with probability `rate`."""
    n = len(query_vecs)
    if len(cand_vecs) != 2 * n:
        raise ValueError(f"expected {2 * n} candidates, got {len(cand_vecs)}")
    coin = rng.random(n) < rate
    random_choice = random_allowed(n, rng)
    hard = nearest_allowed(query_vecs, cand_vecs, index)
    chosen = np.where(coin, random_choice, hard)
    dist = np.linalg.norm(query_vecs - cand_vecs[chosen], axis=1)
    hard_dist = float(dist[~coin].mean()) if (~coin).any() else float("nan")
    return Negatives(chosen, coin, rate, float(dist.mean()), hard_dist)
