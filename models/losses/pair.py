"""The pair classifier's terms, the same under every similarity loss: cross-entropy of (query, positive) →
1 and (query, mined negative) → 0, so the rerank it learns stays comparable across losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.biencoder import TripletOutput


def pair_terms(out: TripletOutput) -> dict[str, torch.Tensor]:
    """`ce_pos` and `ce_neg` (scalars)."""
    ones = torch.ones(out.pos_logits.shape[0], dtype=torch.long, device=out.pos_logits.device)
    return {
        "ce_pos": F.cross_entropy(out.pos_logits.float(), ones),
        "ce_neg": F.cross_entropy(out.neg_logits.float(), torch.zeros_like(ones)),
    }
