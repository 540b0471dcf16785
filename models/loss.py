"""The training objective: triplet margin loss on projected vectors plus pair-classifier cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.biencoder import TripletOutput


class TripletPairLoss(nn.Module):
    """TripletMarginLoss(margin, p=2) on (query, counter, negative) + CE(pos → 1) + CE(neg → 0)."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.triplet = nn.TripletMarginLoss(margin=margin, p=2)

    def forward(self, out: TripletOutput) -> dict[str, torch.Tensor]:
        """The total loss and each term (all scalars)."""
        n = out.pos_logits.shape[0]
        ones = torch.ones(n, dtype=torch.long, device=out.pos_logits.device)
        terms = {
            "triplet": self.triplet(out.query_proj.float(), out.pos_proj.float(), out.neg_proj.float()),
            "ce_pos": F.cross_entropy(out.pos_logits.float(), ones),
            "ce_neg": F.cross_entropy(out.neg_logits.float(), torch.zeros_like(ones)),
        }
        terms["total"] = terms["triplet"] + terms["ce_pos"] + terms["ce_neg"]
        return terms
