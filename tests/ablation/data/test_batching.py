"""Batching: per-batch padding, length-sorted and bucketed batches that cover every text exactly once."""

from __future__ import annotations

import numpy as np

from ablation.data.batching import TokenTexts, bucketed_batches, length_sorted_batches, pad_batch
from ablation.evaluation.encoding import encode


def test_pad_batch_pads_to_the_longest_or_a_fixed_length() -> None:
    b = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_batch([[5]], pad_id=0, to_length=4)["input_ids"].shape == (1, 4)


def test_bucketed_batches_cover_everything_once_and_are_seeded() -> None:
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    a = bucketed_batches(lengths, 8, 3, np.random.default_rng(1))
    b = bucketed_batches(lengths, 8, 3, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(103))
    spread = np.mean([np.ptp(lengths[x]) for x in a])
    shuffled = np.mean([np.ptp(lengths[x]) for x in np.array_split(np.random.default_rng(2).permutation(103), 13)])
    assert spread < shuffled  # bucketing groups texts of similar length
    c = bucketed_batches(lengths, 8, 3, np.random.default_rng(9))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_encode_returns_outputs_in_input_order() -> None:
    tokens = [[1] * n for n in (3, 9, 1, 5)]
    assert [len(b) for b in length_sorted_batches([len(t) for t in tokens], 2)] == [2, 2]
    out = encode(lambda b: {"n": b["attention_mask"].sum(1, keepdim=True).float()}, TokenTexts(tokens, 0), 2, "cpu")
    assert out["n"].ravel().tolist() == [3, 9, 1, 5]
    assert out["n"].dtype == np.float32
