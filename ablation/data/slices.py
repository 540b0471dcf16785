"""Query slices that every test result is also reported on, next to all queries.

- ``unseen``: neither the point's nor the counter's text occurs in the training split (all of it, every
  theme). Cross-listed debates put 616 of the 1,401 test pairs verbatim into training; the unseen slice
  measures retrieval without that memorisation.
- ``self_copy``: the task's pool holds a copy of the query's own text (a point listed again elsewhere).
  A Siamese encoder scores such a copy as itself, so this is where the arms can differ by construction.

A slice is a boolean mask over the split's queries per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ablation.data.corpus import Split, normalize_text, read_split
from ablation.data.tasks import task_pools
from ablation.names import TASKS

SLICES: dict[str, str] = {
    "unseen": "neither text of the pair occurs in the training split",
    "self_copy": "the pool holds a copy of the query's own text",
}

Slices = dict[str, dict[str, np.ndarray]]
"""slice name → task → boolean mask over the split's queries."""


def training_texts(corpus: str | Path) -> frozenset[str]:
    """The normalised texts of the whole training split (every theme), which `unseen` is relative to."""
    return frozenset(normalize_text(t) for t in read_split(corpus, "training").candidate_texts)


def query_slices(split: Split, seen: frozenset[str] | None, tasks: Sequence[str] = TASKS) -> Slices:
    """Every slice's mask per task; `unseen` only when the training texts are given."""
    n = split.n
    out: Slices = {}
    if seen is not None:
        texts = split.candidate_texts
        unseen = np.array(
            [normalize_text(texts[i]) not in seen and normalize_text(texts[n + i]) not in seen for i in range(n)],
            dtype=bool,
        )
        out["unseen"] = {task: unseen for task in tasks}
    rows, cols = split.copies(n + np.arange(n))  # other candidates with the query's own text
    out["self_copy"] = {
        task: np.bincount(rows[task_pools(split).contains(task, rows, cols)], minlength=n) > 0 for task in tasks
    }
    return out
