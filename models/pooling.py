"""Pooling token vectors into one vector per text: mean over real tokens, [CLS], or BERT's pooler."""

from __future__ import annotations

import torch
from torch import nn


def pool(output: object, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool a transformers model output; `mean` ignores padding tokens."""
    hidden = output.last_hidden_state
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if how == "cls":
        return hidden[:, 0]
    if how == "pooler":
        return output.pooler_output
    raise ValueError(f"unknown pooling {how!r}")


class Tower(nn.Module):
    """Text → pooled vector: an encoder followed by pooling (the module an arm may share)."""

    def __init__(self, encoder: nn.Module, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out, attention_mask, self.pooling)
