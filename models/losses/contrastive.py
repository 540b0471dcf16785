"""The field's standard for bi-encoders: an in-batch contrastive loss (InfoNCE; sentence-transformers'
MultipleNegativesRankingLoss), plus the pair classifier's cross-entropy as under the triplet loss.

Each query is scored against every candidate of its batch, the B positives and the B mined negatives, by
cosine similarity times `scale`; the loss is the cross-entropy to its own counter (column i). Candidates
that are copies of the query's counter or of the query itself (`copies`, a [B, 2B] mask the caller builds
from the texts) are left out: the corpus cross-lists debates, so such copies land in one batch, and
scoring them as negatives would teach "same text, other vector". Retrieval with it ranks by cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.biencoder import TripletOutput
from models.losses.pair import pair_terms


def in_batch_logits(out: TripletOutput, scale: float, copies: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 2B] scaled cosines of each query against [positives; negatives], −inf where `copies` is set."""
    q = F.normalize(out.query_proj.float(), dim=-1)
    c = F.normalize(torch.cat([out.pos_proj, out.neg_proj]).float(), dim=-1)
    logits = scale * q @ c.T
    return logits if copies is None else logits.masked_fill(copies, float("-inf"))


class InBatchContrastiveLoss(nn.Module):
    """CE(scale · cos(query, in-batch candidates) → own counter) + CE(pos → 1) + CE(neg → 0)."""

    similarity = "cosine"

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, out: TripletOutput, copies: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The total loss and each term (all scalars). `copies[i, j]`: candidate j is a copy of query i's
        counter or of query i; the target column (i) must not be set."""
        n = out.query_proj.shape[0]
        if copies is not None and bool(copies[torch.arange(n), torch.arange(n)].any()):
            raise ValueError("copies must not mask a query's own counter (its target)")
        logits = in_batch_logits(out, self.scale, copies)
        terms = {"contrastive": F.cross_entropy(logits, torch.arange(n, device=logits.device))}
        terms.update(pair_terms(out))
        terms["total"] = terms["contrastive"] + terms["ce_pos"] + terms["ce_neg"]
        return terms
