"""The MLflow view a study opens on: its final runs grouped by arm next to the zero-shot reference, the
headline metrics (and their `_std`) as columns, and the curves per epoch as charts.

MLflow 3 keeps a shareable view of the runs page in an experiment tag, `mlflow.sharedViewState.<key>`,
and opens it from a link with `viewStateShareKey=<key>`. The tag holds the page's search facets and UI
state as JSON; the field names below are those that MLflow's runs page reads (3.17)."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ablation.names import Role
from ablation.tracking import sqlite_store
from ablation.tracking.store import Tracker, quote

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
"""One colour per arm, by its position in the study's arm list: in every figure of the report and, through
the `mlflow.runColor` tag of its runs, in MLflow's charts."""
ZERO_SHOT_COLOR = "#737373"  # the untrained encoder: grey, no arm's colour
COLOR_TAG = "mlflow.runColor"  # the tag MLflow's UI colours a run's lines and bars by


def arm_colors(arms: list[str]) -> dict[str, str]:
    """The colour of each arm, and of the zero-shot reference."""
    return {**{arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}, "zero-shot": ZERO_SHOT_COLOR}


SHARE_TAG_PREFIX = "mlflow.sharedViewState."
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def share_key(study: str) -> str:
    """The view's key: `compare-<study>` where the study name is a plain token, else a digest of it."""
    name = study if _KEY.fullmatch(study) else hashlib.sha256(study.encode()).hexdigest()[:16]
    return f"compare-{name}"


def _column(key: str) -> str:
    return f"metrics.`{key}`"


def _chart(kind: str, key: str, section: str) -> dict[str, Any]:
    card: dict[str, Any] = {
        "uuid": f"{kind.lower()}-{key}",
        "type": kind,
        "runsCountToCompare": 10,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "metricKey": key,
        "displayName": key,  # MLflow titles a card with its metric key, whatever this says
    }
    if kind == "LINE":
        card.update(
            selectedMetricKeys=[key],
            lineSmoothness=0,
            xAxisKey="step",
            xAxisScaleType="linear",
            scaleType="linear",
            selectedXAxisMetricKey="",
            yAxisKey="metric",
            yAxisExpressions=[],
            ignoreOutliers=False,
            useGlobalXaxisKey=False,
            useGlobalLineSmoothing=False,
            range={},
        )
    return card


def view_state(study: str, columns: Sequence[str], curves: Sequence[str], sweep: bool = False) -> dict[str, Any]:
    """The runs page of `study`: its arm runs (each with its finals' means and `_std`) and its zero-shot run,
    one row, bar and line each in its own colour; `columns` shown first, each with its `_std`, and drawn as
    bar charts; line charts of `curves` per step. A `sweep`: the arm runs of every level (named with their
    level) and the zero-shot reference, with their level as the first column."""
    shown = [c for key in columns for c in (_column(key), _column(f"{key}_std"))]
    charts = [_chart("LINE", key, "curves") for key in curves] + [_chart("BAR", key, "test") for key in columns]
    # the arm runs (each carries its finals' means, `_std` and mean curves) and the zero-shot run, ungrouped:
    # each has its own colour (`mlflow.runColor`), which MLflow cannot give a group
    owner = "sweep" if sweep else "study"
    runs = f"tags.{owner} = {quote(study)} and tags.role != 'trial' and tags.role != 'study' and tags.role != 'final'"
    return {
        "searchFilter": runs,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [*(["tags.`level`"] if sweep else []), *shown, "tags.`seed`", "tags.`role`"],
        "columnOrder": [*(["tags.`level`"] if sweep else []), *shown],  # MLflow orders the columns by this
        "columnWidths": {c: 210 if c.endswith("_std`") else 250 for c in shown},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [
            {"uuid": "curves", "name": "Per epoch, mean over seeds", "display": True, "isReordered": False},
            {"uuid": "test", "name": "Test (headline)", "display": True, "isReordered": False},
        ],
        "isAccordionReordered": True,  # keeps these sections first; MLflow appends one per metric prefix
        "groupBy": None,
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "viewMaximized": False,
        "runListHidden": False,
        "chartsSearchFilter": "",
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def view_tag(study: str, state: dict[str, Any]) -> dict[str, str]:
    """The experiment tag that holds the view."""
    return {f"{SHARE_TAG_PREFIX}{share_key(study)}": json.dumps(state, separators=(",", ":"))}


MODEL_TRAINING = "workflowType=machine_learning"  # MLflow 3 opens an experiment on its GenAI pages without it


def view_link(base_url: str, experiment_id: str, study: str) -> str:
    """The link that opens the view, on the runs page of the experiment, in the model-training workflow."""
    base = base_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}&viewStateShareKey={share_key(study)}"


UI_BASE = "http://127.0.0.1:5000"  # where `make ui` serves a local store
DASHBOARD_BASE = "http://127.0.0.1:8080"  # where `make dashboard` serves the tuning queues


def ui_base(tracking_uri: str) -> str:
    """The address whose pages show the store's runs: the server itself (without any credentials in its URL),
    or `make ui`'s for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(tracking_uri)
        return urllib.parse.urlunsplit(
            (parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path.rstrip("/"), "", "")
        )
    return UI_BASE


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow page of one run."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def trial_url(study_id: int, number: int, base: str = DASHBOARD_BASE) -> str:
    """optuna-dashboard's page of one trial."""
    return f"{base.rstrip('/')}/dashboard/studies/{study_id}/trials?numbers={number}"


def studies(tracking_uri: str, most: int = 20) -> list[str]:
    """Names of the studies and sweeps in the store (none where it does not exist yet)."""
    if sqlite_store.missing(tracking_uri):
        return []
    tracker = Tracker(tracking_uri)
    found = [
        r.data.tags.get("study", "") for role in (Role.STUDY, Role.SWEEP) for r in tracker.search(None, {"role": role})
    ]
    return sorted({name for name in found if name})[:most]


def study_link(tracking_uri: str, study: str, base_url: str) -> str | None:
    """The link `make ui` prints: the study's view where its report published one, else its experiment's
    runs page; None where the store holds no such study. Nothing is created in a store that does not exist."""
    base = base_url.rstrip("/")
    if sqlite_store.missing(tracking_uri):
        return None
    tracker = Tracker(tracking_uri)
    found = tracker.search(None, {"study": study, "role": Role.STUDY}, limit=1)
    found = found or tracker.search(None, {"study": study, "role": Role.SWEEP}, limit=1)
    if not found:
        return None
    experiment = tracker.client.get_experiment(found[0].info.experiment_id)
    if f"{SHARE_TAG_PREFIX}{share_key(study)}" in experiment.tags:
        return view_link(base, experiment.experiment_id, study)
    return f"{base}/#/experiments/{experiment.experiment_id}/runs?{MODEL_TRAINING}"
