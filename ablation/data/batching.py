"""Tokenising once, and length-bucketed batching with per-batch padding.

Sorting texts by length before batching means each batch is padded only to its own longest text, which
is most of the speed of encoding on CPU (see `make bench`, P4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

Tokens = list[list[int]]


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> Tokens:
    """Token ids per text, truncated to `max_length`, unpadded."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


def pad_batch(tokens: Sequence[Sequence[int]], pad_id: int, to_length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest member (or to `to_length`); returns ids and attention mask."""
    width = to_length or max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for row, t in enumerate(tokens):
        ids[row, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        mask[row, : len(t)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length, longest first (a memory spike shows up at once)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, bucket_batches: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Training batches: shuffle, sort within buckets of `bucket_batches` batches by length, shuffle batches."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches: list[np.ndarray] = []
    span = batch_size * bucket_batches
    for start in range(0, len(order), span):
        bucket = order[start : start + span]
        bucket = bucket[np.argsort(-lengths[bucket], kind="stable")]
        batches.extend(bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class Texts(Protocol):
    """Texts that can be batched for an encoder: their lengths (for length-sorted batches) and a batch of
    model inputs (`attention_mask`, and `input_ids` or a frozen prefix's output `prefix`)."""

    @property
    def lengths(self) -> np.ndarray: ...

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class TokenTexts:
    """Tokenised texts, right-padded per batch (or to `fixed_length`)."""

    tokens: Tokens
    pad_id: int
    fixed_length: int | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens])

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return pad_batch([self.tokens[i] for i in idx], self.pad_id, self.fixed_length)
