"""Names every layer shares, defined once on the ground floor: the 8 tasks, the metric keys, the run roles.

A metric key reads `<split>/[<slice>/]<mode>/<metric>/<task>`: `val/retrieval/acc_at_1/mean` is the mean
over the 8 tasks of the bi-encoder's validation acc@1, `test/unseen/rerank/mrr/sdoa` the reranked test MRR
of task sdoa on the unseen queries.
"""

from __future__ import annotations

from enum import StrEnum

TASKS: tuple[str, ...] = ("sdoc", "sdc", "sdoa", "sda", "stc", "sta", "epc", "epa")
"""The 8 candidate pools of Wachsmuth et al. (2018), narrowest first; `data.tasks.POOLS` defines them."""


def metric_key(split: str, mode: str, metric: str = "acc_at_1", task: str = "mean", slice_: str = "all") -> str:
    """The MLflow key of one metric; the slice `all` is left out of the key."""
    return "/".join([split, *([] if slice_ == "all" else [slice_]), mode, metric, task])


OBJECTIVE = metric_key("val", "retrieval")
"""The study's default objective: mean validation acc@1 of the bi-encoder itself."""


class Role(StrEnum):
    """The `role` tag of every MLflow run the harness makes (a StrEnum: equal to, and stored as, its text)."""

    SWEEP = "sweep"  # a sweep's own run, above its levels' study runs
    STUDY = "study"  # one study (or one level of a sweep): its verdict and effect metrics
    ARM = "arm"  # one arm of a study: aggregates over its final seeds
    TRIAL = "trial"  # a tuning trial
    FINAL = "final"  # a final run under one seed, with the arm's tuned parameters
    ZERO_SHOT = "zero-shot"  # the untrained encoder, evaluated once
    BENCH = "bench"  # a `make bench` measurement


WORK_ROLES = (Role.TRIAL, Role.FINAL, Role.ZERO_SHOT)
"""Runs that do work; the study and arm runs only hold results."""
