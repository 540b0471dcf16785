"""Zero-shot baseline: the pretrained encoder, mean-pooled and L2-normalised, ranked by cosine."""

from __future__ import annotations

import numpy as np
import torch

from ablation.config import EvalConfig, ModelConfig
from ablation.corpus import Split
from ablation.encode import encode, tokenize
from ablation.evaluate import EvalResult, evaluate_scores, score_matrix
from models.backbone import load_encoder, load_tokenizer
from models.pooling import Tower


def zero_shot(split: Split, model_cfg: ModelConfig, eval_cfg: EvalConfig, device: torch.device) -> EvalResult:
    """Encode the split's points and counters with the untrained encoder and evaluate all tasks."""
    tokenizer = load_tokenizer(model_cfg)
    tower = Tower(load_encoder(model_cfg, len(tokenizer)), "mean").to(device).eval()

    def fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"vec": torch.nn.functional.normalize(tower(**batch), dim=-1)}

    tokens_q = tokenize(tokenizer, list(split.queries["text"]), model_cfg.max_length)
    tokens_c = tokenize(tokenizer, list(split.counters["text"]), model_cfg.max_length)
    pad = tokenizer.pad_token_id
    q = encode(fn, tokens_q, pad, eval_cfg.batch_size, device, desc=f"encode {split.name} points")["vec"]
    c = encode(fn, tokens_c, pad, eval_cfg.batch_size, device, desc=f"encode {split.name} counters")["vec"]
    # One encoder serves both sides, so a point's candidate vector is its query vector.
    scores = score_matrix(q, np.concatenate([c, q]), "cosine")
    return evaluate_scores(split, scores, ks=eval_cfg.ks)
