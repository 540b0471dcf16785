"""Similarity losses, one file each, registered by name (`train.loss`). Each declares the similarity it
trains (`l2` or `cosine`), which retrieval and negative mining then use."""

from __future__ import annotations

from torch import nn

from models.losses.contrastive import InBatchContrastiveLoss
from models.losses.triplet import TripletPairLoss

LOSSES = {"triplet": TripletPairLoss, "contrastive": InBatchContrastiveLoss}
SIMILARITY = {name: cls.similarity for name, cls in LOSSES.items()}


def build_loss(name: str, margin: float = 1.0, scale: float = 20.0) -> nn.Module:
    """The loss named `name`: `triplet` (margin on L2) or `contrastive` (scale on cosine)."""
    if name == "triplet":
        return TripletPairLoss(margin)
    if name == "contrastive":
        return InBatchContrastiveLoss(scale)
    raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
