"""The seed's objective: a triplet margin loss on the L2 distance of projected vectors, plus the pair
classifier's cross-entropy on (positive, mined negative). Retrieval with it ranks by L2 distance."""

from __future__ import annotations

import torch
from torch import nn

from models.biencoder import TripletOutput
from models.losses.pair import pair_terms


class TripletPairLoss(nn.Module):
    """TripletMarginLoss(margin, p=2) on (query, counter, negative) + CE(pos → 1) + CE(neg → 0)."""

    similarity = "l2"

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.triplet = nn.TripletMarginLoss(margin=margin, p=2)

    def forward(self, out: TripletOutput, copies: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The total loss and each term (all scalars); `copies` is not used (one negative per query, mined
        so that it is never a copy)."""
        terms = {"triplet": self.triplet(out.query_proj.float(), out.pos_proj.float(), out.neg_proj.float())}
        terms.update(pair_terms(out))
        terms["total"] = terms["triplet"] + terms["ce_pos"] + terms["ce_neg"]
        return terms
