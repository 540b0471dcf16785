"""Zero-shot baseline: the pretrained encoder, mean-pooled and L2-normalised, ranked by cosine."""

from __future__ import annotations

import numpy as np
import torch

from ablation import encoders
from ablation.config import ModelConfig
from ablation.data.batching import TokenTexts
from ablation.data.run_data import TokenizedSplit
from ablation.evaluation.encoding import encode
from ablation.evaluation.evaluator import Evaluator
from ablation.evaluation.ranking import PairScorer, score_matrix
from models.pooling import Tower


class ZeroShot(Evaluator):
    """The untrained encoder, loaded once; retrieval only (it has no pair classifier)."""

    def __init__(self, model_cfg: ModelConfig, batch_size: int, device: torch.device | str) -> None:
        self.batch_size, self.device = batch_size, device
        self.tokenizer = encoders.tokenizer(model_cfg)
        self.tower = Tower(encoders.encoder(model_cfg, len(self.tokenizer)), "mean").to(device).eval()

    def vectors(self, tokens: list[list[int]], desc: str) -> np.ndarray:
        """Normalised mean-pooled vectors of tokenised texts."""

        def fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"vec": torch.nn.functional.normalize(self.tower(**batch), dim=-1)}

        texts = TokenTexts(tokens, self.tokenizer.pad_token_id)
        return encode(fn, texts, self.batch_size, self.device, desc=desc)["vec"]

    def score(self, data: TokenizedSplit) -> tuple[np.ndarray, PairScorer | None]:
        n = data.split.n
        q = self.vectors(data.query_tokens, f"encode {data.split.name} points")
        c = self.vectors(data.cand_tokens[:n], f"encode {data.split.name} counters")
        # One encoder serves both sides, so a point's candidate vector is its query vector.
        return score_matrix(q, np.concatenate([c, q]), "cosine"), None
