"""Names every layer shares, defined once on the ground floor: the 8 tasks and the metric keys.

A metric key reads `<split>/[<slice>/]<mode>/<metric>/<task>`: `val/retrieval/acc_at_1/mean` is the mean
over the 8 tasks of the bi-encoder's validation acc@1, `test/unseen/rerank/mrr/sdoa` the reranked test MRR
of task sdoa on the unseen queries.
"""

from __future__ import annotations

TASKS: tuple[str, ...] = ("sdoc", "sdc", "sdoa", "sda", "stc", "sta", "epc", "epa")
"""The 8 candidate pools of Wachsmuth et al. (2018), narrowest first; `data.tasks.POOLS` defines them."""


def metric_key(split: str, mode: str, metric: str = "acc_at_1", task: str = "mean", slice_: str = "all") -> str:
    """The MLflow key of one metric; the slice `all` is left out of the key."""
    return "/".join([split, *([] if slice_ == "all" else [slice_]), mode, metric, task])


OBJECTIVE = metric_key("val", "retrieval")
"""The study's default objective: mean validation acc@1 of the bi-encoder itself."""
