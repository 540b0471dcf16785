"""Zero-shot baseline: the pretrained encoder, mean-pooled and L2-normalised, ranked by cosine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ablation import encoders
from ablation.config import EvalConfig, ModelConfig
from ablation.data.batching import tokenize
from ablation.data.corpus import Split
from ablation.data.slices import Slices
from ablation.data.tasks import TASKS
from ablation.evaluation.encoding import encode
from ablation.evaluation.ranking import EvalResult, evaluate_scores, score_matrix
from models.pooling import Tower


class ZeroShot:
    """The untrained encoder, loaded once, evaluating any number of splits."""

    def __init__(self, model_cfg: ModelConfig, eval_cfg: EvalConfig, device: torch.device | str) -> None:
        self.model_cfg, self.eval_cfg, self.device = model_cfg, eval_cfg, device
        self.tokenizer = encoders.tokenizer(model_cfg)
        self.tower = Tower(encoders.encoder(model_cfg, len(self.tokenizer)), "mean").to(device).eval()

    def _vectors(self, texts: list[str], desc: str) -> np.ndarray:
        tokens = tokenize(self.tokenizer, texts, self.model_cfg.max_length)

        def fn(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {"vec": torch.nn.functional.normalize(self.tower(**batch), dim=-1)}

        return encode(fn, tokens, self.tokenizer.pad_token_id, self.eval_cfg.batch_size, self.device, desc=desc)["vec"]

    def evaluate(self, split: Split, slices: Slices | None = None, tasks: Sequence[str] = TASKS) -> EvalResult:
        """Encode the split's points and counters and evaluate `tasks`."""
        q = self._vectors(list(split.queries["text"]), f"encode {split.name} points")
        c = self._vectors(list(split.counters["text"]), f"encode {split.name} counters")
        # One encoder serves both sides, so a point's candidate vector is its query vector.
        scores = score_matrix(q, np.concatenate([c, q]), "cosine")
        return evaluate_scores(split, scores, tasks, ks=self.eval_cfg.ks, slices=slices)


def zero_shot(
    split: Split, model_cfg: ModelConfig, eval_cfg: EvalConfig, device: torch.device | str, slices: Slices | None = None
) -> EvalResult:
    """Encode one split with the untrained encoder and evaluate all tasks."""
    return ZeroShot(model_cfg, eval_cfg, device).evaluate(split, slices)
