"""Negative mining: never the own counter or the query itself, rate schedule, seeded draws, index choice."""

from __future__ import annotations

import numpy as np
import pytest

from ablation.negatives import mine, nearest_allowed, random_allowed, random_rate_at


def test_rate_schedule_decays_and_floors_at_zero() -> None:
    assert random_rate_at(0, 0.8, 0.02) == 0.8
    assert random_rate_at(10, 0.8, 0.02) == pytest.approx(0.6)
    assert random_rate_at(100, 0.8, 0.02) == 0.0


def test_hard_negative_is_nearest_allowed() -> None:
    rng = np.random.default_rng(0)
    n = 30
    q = rng.normal(size=(n, 8))
    c = rng.normal(size=(2 * n, 8))
    c[:n] = q + 1e-3  # own counters are the nearest; the index must skip them
    c[n:] = q + 2e-3  # and the query itself as a candidate
    hard = nearest_allowed(q, c, "brute")
    own = np.arange(n)
    assert not np.isin(hard - own, [0]).any() and not (hard == own + n).any()
    d = np.linalg.norm(q[:, None] - c[None], axis=2)
    d[own, own] = d[own, own + n] = np.inf
    assert (hard == d.argmin(axis=1)).all()
    assert (nearest_allowed(q, c, "balltree") == hard).all()


def test_random_draws_skip_excluded_and_cover_the_rest() -> None:
    n = 5
    draws = np.stack([random_allowed(n, np.random.default_rng(s)) for s in range(400)])
    for i in range(n):
        seen = set(draws[:, i])
        assert i not in seen and n + i not in seen
        assert seen == set(range(2 * n)) - {i, n + i}


def test_rate_controls_the_share_and_seed_fixes_the_draws() -> None:
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(200, 4)), rng.normal(size=(400, 4))
    assert mine(q, c, 0.0, np.random.default_rng(5)).is_random.sum() == 0
    assert mine(q, c, 1.0, np.random.default_rng(5)).is_random.all()
    half = mine(q, c, 0.5, np.random.default_rng(5))
    assert 0.35 < half.is_random.mean() < 0.65
    again = mine(q, c, 0.5, np.random.default_rng(5))
    assert (half.index == again.index).all()
    assert half.stats()["neg/fraction_random"] == half.is_random.mean()
