"""A tower: text → pooled vector, through an encoder and pooling (mean over real tokens, [CLS], or BERT's
pooler). A tower whose embeddings and bottom layers are frozen can start from their cached output."""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str, pooler: nn.Module | None = None) -> torch.Tensor:
    """Pool token vectors; `mean` ignores padding tokens."""
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if how == "cls":
        return hidden[:, 0]
    if how == "pooler" and pooler is not None:
        return pooler(hidden)
    raise ValueError(f"unknown pooling {how!r}")


class Tower(nn.Module):
    """Text → pooled vector: an encoder followed by pooling (the module an arm may share).

    With `prefix_layers` = N ≥ 1, the embeddings and the bottom N layers are a frozen prefix: they always
    run in eval mode (no dropout, so their output depends on the tokens alone), `prefix()` computes their
    output, and `forward(prefix=...)` runs only the layers above it."""

    def __init__(self, encoder: nn.Module, pooling: str, prefix_layers: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.prefix_layers = prefix_layers

    def frozen_modules(self) -> list[nn.Module]:
        """The frozen prefix: the embeddings and the bottom `prefix_layers` layers (none without a prefix)."""
        if not self.prefix_layers:
            return []
        return [self.encoder.embeddings, *self.encoder.encoder.layer[: self.prefix_layers]]

    def train(self, mode: bool = True) -> Tower:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: list[nn.Module]) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        return hidden

    @torch.no_grad()
    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen prefix's token vectors [batch, length, hidden]."""
        if not self.prefix_layers:
            raise ValueError("this tower has no frozen prefix")
        hidden = self.encoder.embeddings(input_ids=input_ids)
        return self._layers(hidden, attention_mask, list(self.encoder.encoder.layer[: self.prefix_layers]))

    def forward(
        self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None, prefix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pooled vectors from token ids, or from the frozen prefix's output (`prefix`)."""
        if prefix is None:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            hidden = out.last_hidden_state
        else:
            layers = list(self.encoder.encoder.layer[self.prefix_layers :])
            hidden = self._layers(prefix.to(next(self.parameters()).dtype), attention_mask, layers)
        return pool(hidden, attention_mask, self.pooling, getattr(self.encoder, "pooler", None))
