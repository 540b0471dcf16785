"""Negative mining: never a copy of the query's or its counter's text, per-step rate schedule, seeded draws."""

from __future__ import annotations

import numpy as np
import pytest

from ablation.training.negatives import Forbidden, mine, nearest_allowed, random_allowed, random_rates


def _codes(n: int, copies: dict[int, int]) -> np.ndarray:
    """Text codes of a universe [counters; points] where candidate j repeats the text of copies[j]."""
    codes = np.arange(2 * n)
    for j, of in copies.items():
        codes[j] = codes[of]
    return codes


def test_schedule_runs_from_the_initial_to_the_final_rate_over_the_run() -> None:
    steps = np.arange(10)
    assert np.allclose(random_rates(steps, 10, 0.8, None), 0.8)  # constant
    ramp = random_rates(steps, 10, 0.6, 0.0)
    assert ramp[0] == pytest.approx(0.6) and ramp[-1] == pytest.approx(0.0)
    assert np.all(np.diff(ramp) < 0) and ramp[5] == pytest.approx(0.6 * 4 / 9)
    assert random_rates(np.array([0]), 1, 0.3, 0.0)[0] == pytest.approx(0.3)  # a one-step run: its start


def test_forbidden_holds_every_copy_of_the_point_and_the_counter() -> None:
    n = 4  # counter 2 repeats counter 0; point 3 (index 7) repeats point 0 (index 4); counter 3 repeats point 1
    f = Forbidden.from_codes(_codes(n, {2: 0, 7: 4, 3: 5}))
    rows = [set(r[r < 2 * n].tolist()) for r in f.index]
    assert rows[0] == {0, 2, 4, 7}
    assert rows[1] == {1, 5, 3}
    assert rows[2] == {2, 0, 6}
    assert rows[3] == {3, 5, 7, 4}
    assert f.count.tolist() == [4, 3, 3, 4]


def test_hard_negative_skips_copies_and_counts_them() -> None:
    rng = np.random.default_rng(0)
    n = 30
    q = rng.normal(size=(n, 8))
    c = rng.normal(size=(2 * n, 8))
    c[:n] = q + 1e-3  # own counters are the nearest
    c[n:] = q + 2e-3  # then the query itself as a candidate
    c[5], c[n + 6] = q[0] + 3e-3, q[1] + 3e-3  # then a copy of query 0's counter and of query 1's point
    codes = _codes(n, {5: 0, n + 6: n + 1})
    forbidden = Forbidden.from_codes(codes)
    hard, skipped = nearest_allowed(q, c, forbidden, "brute")
    assert not forbidden.contains(hard).any()
    d = np.linalg.norm(q[:, None] - c[None], axis=2)
    for i, row in enumerate(forbidden.index):
        d[i, row[row < 2 * n]] = np.inf
    assert (hard == d.argmin(axis=1)).all()
    assert skipped == 2  # queries 0 and 1 pass over the copy placed between themselves and their nearest allowed
    balltree, _ = nearest_allowed(q, c, forbidden, "balltree")
    assert (balltree == hard).all()


def test_random_draws_skip_every_forbidden_candidate_and_cover_the_rest() -> None:
    n = 5
    forbidden = Forbidden.from_codes(_codes(n, {2: 0, 9: 5}))
    draws = np.stack([random_allowed(forbidden, np.random.default_rng(s)) for s in range(600)])
    for i in range(n):
        banned = set(forbidden.index[i][forbidden.index[i] < 2 * n].tolist())
        assert set(draws[:, i]) == set(range(2 * n)) - banned


def test_mining_with_copies_never_uses_one_and_logs_the_skips() -> None:
    rng = np.random.default_rng(3)
    n = 50
    q = rng.normal(size=(n, 4))
    c = np.concatenate([q + 0.01, q])  # every query's nearest candidates are its counter and itself
    copies = {n + i + 1: n + i for i in range(0, n - 1, 2)}  # points in pairs of equal text
    forbidden = Forbidden.from_codes(_codes(n, copies))
    c[n + 1 : 2 * n : 2] = c[n : 2 * n - 1 : 2]  # a copy sits where its twin does: at distance 0
    for rate in (0.0, 0.5, 1.0):
        negs = mine(q, c, np.full(n, rate), np.random.default_rng(5), forbidden)
        assert negs.dup_used == 0 and not forbidden.contains(negs.index).any()
        assert negs.stats()["neg/dup_negatives_used"] == 0
    assert mine(q, c, 0.0, np.random.default_rng(5), forbidden).stats()["neg/dup_neighbours_skipped"] > 0


def test_rate_controls_the_share_and_seed_fixes_the_draws() -> None:
    rng = np.random.default_rng(1)
    n = 200
    q, c = rng.normal(size=(n, 4)), rng.normal(size=(2 * n, 4))
    forbidden = Forbidden.from_codes(np.arange(2 * n))
    assert mine(q, c, 0.0, np.random.default_rng(5), forbidden).is_random.sum() == 0
    assert mine(q, c, 1.0, np.random.default_rng(5), forbidden).is_random.all()
    ramp = mine(q, c, np.r_[np.ones(n // 2), np.zeros(n // 2)], np.random.default_rng(5), forbidden)
    assert ramp.is_random[: n // 2].all() and not ramp.is_random[n // 2 :].any()
    half = mine(q, c, 0.5, np.random.default_rng(5), forbidden)
    assert 0.35 < half.is_random.mean() < 0.65
    again = mine(q, c, 0.5, np.random.default_rng(5), forbidden)
    assert (half.index == again.index).all()
    assert half.stats()["neg/fraction_random"] == half.is_random.mean()
