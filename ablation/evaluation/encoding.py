"""Batched encoding of tokenised texts in length-sorted batches, with progress."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ablation.data.batching import Tokens, length_sorted_batches, pad_batch


@torch.no_grad()
def encode(
    fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    tokens: Tokens,
    pad_id: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    desc: str = "encoding",
    fixed_length: int | None = None,
) -> dict[str, np.ndarray]:
    """Run `fn` over all texts in length-sorted batches; outputs come back in the input order as float32."""
    batches = length_sorted_batches([len(t) for t in tokens], batch_size)
    outputs: dict[str, np.ndarray] = {}
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=None):
        batch = {k: v.to(device) for k, v in pad_batch([tokens[i] for i in idx], pad_id, fixed_length).items()}
        for name, value in fn(batch).items():
            value = value.float().cpu().numpy()
            if name not in outputs:
                outputs[name] = np.empty((len(tokens), *value.shape[1:]), dtype=np.float32)
            outputs[name][idx] = value
    return outputs
