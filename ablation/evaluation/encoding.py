"""Batched encoding of tokenised texts in length-sorted batches, with progress."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ablation.data.batching import Texts, length_sorted_batches


@torch.no_grad()
def encode(
    fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    texts: Texts,
    batch_size: int,
    device: torch.device | str = "cpu",
    desc: str = "encoding",
) -> dict[str, np.ndarray]:
    """Run `fn` over all texts in length-sorted batches; outputs come back in the input order as float32."""
    lengths = texts.lengths
    outputs: dict[str, np.ndarray] = {}
    for idx in tqdm(length_sorted_batches(lengths, batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = {k: v.to(device) for k, v in texts.batch(idx).items()}
        for name, value in fn(batch).items():
            value = value.float().cpu().numpy()
            if name not in outputs:
                outputs[name] = np.empty((len(lengths), *value.shape[1:]), dtype=np.float32)
            outputs[name][idx] = value
    return outputs
