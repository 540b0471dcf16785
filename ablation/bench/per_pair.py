"""The old scripts' evaluation, kept as the slow reference that `make bench` P2 measures against."""

from __future__ import annotations

import numpy as np
import torch

from ablation.data.corpus import Split
from ablation.data.tasks import TaskMasks
from ablation.names import TASKS


def per_pair_accuracy(
    split: Split, q: dict, c: dict, classifier: torch.nn.Module, k: int, tasks: tuple[str, ...] = TASKS
) -> dict[str, float]:
    """The old scripts' way: per task, per query, distances in a loop and one classifier call per pair."""
    masks = TaskMasks(split)
    out = {}
    for task in tasks:
        mask = masks.mask(task)
        hits_retrieval = hits_rerank = 0
        for i in range(split.n):
            pool = np.flatnonzero(mask[i])
            dist = np.linalg.norm(c["proj"][pool] - q["proj"][i], axis=1)
            true_d = dist[pool == i][0]
            rank = int((dist <= true_d).sum())
            hits_retrieval += rank == 1
            order = pool[np.argsort(dist, kind="stable")][:k]
            probs = []
            for j in order:
                with torch.no_grad():
                    logits = classifier(
                        torch.as_tensor(q["proj"][i : i + 1]),
                        torch.as_tensor(q["pool"][i : i + 1]),
                        torch.as_tensor(c["proj"][j : j + 1]),
                        torch.as_tensor(c["pool"][j : j + 1]),
                    )
                probs.append(float(torch.softmax(logits, -1)[0, 1]))
            best = order[int(np.argmax(probs))]
            hits_rerank += best == i
        out[f"retrieval/acc_at_1/{task}"] = hits_retrieval / split.n
        out[f"rerank/acc_at_1/{task}"] = hits_rerank / split.n
    return out
