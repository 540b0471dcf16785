"""The MLflow view of a study: its key, what it filters, shows and groups, and the link `make ui` prints."""

from __future__ import annotations

import json
from pathlib import Path

from ablation.tracking.store import Tracker
from ablation.tracking.view import (
    SHARE_TAG_PREFIX,
    ZERO_SHOT_COLOR,
    arm_colors,
    share_key,
    study_link,
    view_state,
    view_tag,
)

COLUMNS = ("test/retrieval/acc_at_1/mean", "test/unseen/retrieval/acc_at_1/mean")


def test_the_key_is_a_plain_token_whatever_the_study_is_called() -> None:
    assert share_key("quick") == "compare-quick"
    odd = share_key("it's a study/with spaces")
    assert odd.startswith("compare-") and odd.removeprefix("compare-").isalnum()
    assert odd != share_key("it's a study/with spaces 2")


def test_the_view_shows_the_arm_runs_and_zero_shot_each_in_its_colour_with_each_headline_and_its_std() -> None:
    state = view_state("it's", COLUMNS, ["epoch/loss/total"])
    assert state["searchFilter"].startswith('tags.study = "it\'s"')  # quoted as MLflow's parser reads it
    assert "tags.role != 'trial'" in state["searchFilter"] and "tags.role != 'study'" in state["searchFilter"]
    assert "tags.role != 'final'" in state["searchFilter"]  # arm runs carry their finals' means and _std
    assert state["columnOrder"] == [
        "metrics.`test/retrieval/acc_at_1/mean`",
        "metrics.`test/retrieval/acc_at_1/mean_std`",
        "metrics.`test/unseen/retrieval/acc_at_1/mean`",
        "metrics.`test/unseen/retrieval/acc_at_1/mean_std`",
    ]
    assert state["groupBy"] is None  # a group's colour lives in the browser; a run's in its mlflow.runColor tag
    colors = arm_colors(["shared", "unshared", "shared_projection"])
    assert len(set(colors.values())) == 4 and colors["zero-shot"] == ZERO_SHOT_COLOR
    cards = state["compareRunCharts"]
    assert [(c["type"], c["metricKey"]) for c in cards] == [("LINE", "epoch/loss/total")] + [
        ("BAR", k) for k in COLUMNS
    ]
    assert {c["metricSectionId"] for c in cards} == {s["uuid"] for s in state["compareRunSections"]}
    ((key, value),) = view_tag("it's", state).items()
    assert key == SHARE_TAG_PREFIX + share_key("it's") and json.loads(value) == state


def test_the_link_opens_the_view_only_once_it_is_published(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert study_link(f"sqlite:///{missing}", "quick", "http://127.0.0.1:5000/") is None
    assert not missing.exists()  # looking for a link creates no store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id("quick")
    assert study_link(uri, "quick", "http://h") is None
    tracker.create_run("quick", "quick", {"study": "quick", "role": "study"})
    ml = "workflowType=machine_learning"  # the model-training pages on a first visit, not the GenAI ones
    assert study_link(uri, "quick", "http://h") == f"http://h/#/experiments/{exp}/runs?{ml}"
    tracker.set_experiment_tags(exp, view_tag("quick", view_state("quick", COLUMNS, [])))
    assert (
        study_link(uri, "quick", "http://h")
        == f"http://h/#/experiments/{exp}/runs?{ml}&viewStateShareKey=compare-quick"
    )


def test_a_sweep_opens_on_the_arm_runs_of_every_level_with_the_level_first(tmp_path: Path) -> None:
    state = view_state("depth", COLUMNS, [], sweep=True)
    assert state["searchFilter"].startswith("tags.sweep = 'depth'") and "tags.role != 'final'" in state["searchFilter"]
    assert state["groupBy"] is None and state["selectedColumns"][0] == "tags.`level`"
    assert state["columnOrder"][0] == "tags.`level`"  # MLflow orders columns by this: the level first
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id("depth")
    tracker.create_run("depth", "depth", {"study": "depth", "role": "sweep"})
    tracker.set_experiment_tags(exp, view_tag("depth", state))
    link = f"http://h/#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey=compare-depth"
    assert study_link(uri, "depth", "http://h") == link
