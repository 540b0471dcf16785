"""Which study is a sweep and in what order its levels ran, read from MLflow (the sweep's run carries the
role `sweep`; each level's study run the tags `sweep` and `level`)."""

from __future__ import annotations

from typing import Any

from ablation.names import Role
from ablation.tracking.store import Tracker


def find_sweep(name: str, uri: str, experiment: str | None = None) -> Any:
    """The MLflow run (an `mlflow.entities.Run`) of sweep `name`, or None when `name` is not a sweep."""
    found = Tracker(uri).search(experiment, {"study": name, "role": Role.SWEEP}, limit=1)
    return found[0] if found else None


def level_order(name: str, uri: str, experiment: str | None) -> list[tuple[str, str, str]]:
    """(label, sub-study, the sub-study whose zero-shot run is its reference: its own, else the last earlier
    level's) of each level of sweep `name`, in the order the levels ran (their study runs' start)."""
    tracker = Tracker(uri)
    studies = sorted(tracker.search(experiment, {"sweep": name, "role": Role.STUDY}), key=lambda r: r.info.start_time)
    out, zero_from = [], ""
    for run in studies:
        sub = run.data.tags["study"]
        if not zero_from or tracker.search(experiment, {"study": sub, "role": Role.ZERO_SHOT}, limit=1):
            zero_from = sub
        out.append((run.data.tags.get("level", sub), sub, zero_from))
    return out


def level_reference(study: str, uri: str, experiment: str | None = None) -> str | None:
    """For a sweep's level: the sub-study whose zero-shot run is its reference (None: not a level)."""
    found = Tracker(uri).search(experiment, {"study": study, "role": Role.STUDY}, limit=1)
    parent = found[0].data.tags.get("sweep") if found else None
    if not parent:
        return None
    return next((zero for _, sub, zero in level_order(parent, uri, experiment) if sub == study), None)
