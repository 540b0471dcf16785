"""Initialising a similarity head (hidden → proj_dim) so that it keeps the pretrained geometry."""

from __future__ import annotations

import torch


def pca_projection(vectors: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``[dim, H]`` and bias ``[dim]`` of the affine map onto the top `dim` principal components of
    `vectors` (centred on their mean). Among rank-`dim` orthogonal projections it keeps the largest share
    of the vectors' squared pairwise distances, so L2 retrieval in the projected space starts close to
    retrieval with the pooled vectors, where a random head would scramble them. Each component's sign is
    fixed (largest entry positive) so the result is deterministic; rows past min(vectors, H) are zero."""
    x = vectors.detach().to(torch.float64).cpu()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(dim, vh.shape[0])
    comps = vh[:k]
    comps = comps * torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    weight = torch.zeros(dim, x.shape[1], dtype=torch.float64)
    weight[:k] = comps
    return weight.float(), (-weight @ mean).float()
