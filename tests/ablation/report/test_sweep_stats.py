"""The sweep's statistics on simulated levels: the interaction's false-positive rate and power, and the
rows it builds from per-query results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablation.names import TASKS
from ablation.report.reader import StudyRuns
from ablation.report.sweep_stats import LevelRuns, arm_means, sweep_comparisons

QUERIES, SEEDS = 150, 3


def _per_query(rng: np.random.Generator, logit: np.ndarray, unseen: np.ndarray) -> pd.DataFrame:
    """One run's per-query ranks on every task: rank 1 with probability sigmoid(logit) per query."""
    hit = rng.random((len(TASKS), len(logit))) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "mode": "retrieval",
            "task": np.repeat(TASKS, len(logit)),
            "query_id": np.tile(np.arange(len(logit)), len(TASKS)),
            "rank": np.where(hit.ravel(), 1, 2),
            "unseen": np.tile(unseen, len(TASKS)),
        }
    )


def _level(
    rng: np.random.Generator,
    label: str,
    base: np.ndarray,
    effect: float,
    zero: bool,
    arms: tuple[str, ...] | list[str] = ("shared", "unshared"),
) -> LevelRuns:
    """A level whose other arms are `effect` (logit) above the first, with a seed effect per run."""
    unseen = np.arange(QUERIES) % 3 == 0
    per_query = {}
    for arm, shift in ((a, 0.0 if i == 0 else effect) for i, a in enumerate(arms)):
        for seed in range(1, SEEDS + 1):
            per_query[(arm, str(seed))] = _per_query(rng, base + shift + rng.normal(0, 0.1), unseen)
    if zero:
        per_query[("zero-shot", "0")] = _per_query(rng, base - 0.1, unseen)
    return LevelRuns(label, f"s.{label}", StudyRuns(f"s.{label}", {}, None, pd.DataFrame(), per_query), "s.a")


def _interaction_called(rng: np.random.Generator, first: float, second: float) -> tuple[bool, float]:
    base = rng.normal(0, 1.0, QUERIES)  # query difficulty, the same queries at every level
    levels = [_level(rng, "a", base, first, True), _level(rng, "b", base + 0.2, second, False)]
    rows = sweep_comparisons(levels, ["shared", "unshared"])
    row = rows[(rows["kind"] == "interaction") & (rows["slice"] == "all")].iloc[0]
    return bool(row["significant"]), float(row["p_value"])


def test_equal_effects_at_two_levels_rarely_show_an_interaction_and_a_real_one_is_found() -> None:
    rng = np.random.default_rng(7)
    null = [_interaction_called(rng, 0.3, 0.3) for _ in range(120)]
    assert np.mean([p < 0.05 for _, p in null]) <= 0.08  # the unadjusted test keeps its level
    assert np.mean([called for called, _ in null]) <= 0.05  # and Holm over the family keeps it lower
    real = [_interaction_called(rng, 0.0, 1.5) for _ in range(30)]  # about +0.25 acc@1
    assert np.mean([called for called, _ in real]) >= 0.8


def test_rows_of_a_sweep_are_effects_interactions_and_zero_shot_each_in_its_family() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1.0, QUERIES)
    levels = [_level(rng, "a", base, 0.5, True), _level(rng, "b", base, 0.0, True), _level(rng, "c", base, -0.5, True)]
    rows = sweep_comparisons(levels, ["shared", "unshared"])
    assert rows.groupby(["kind", "family"]).size().to_dict() == {
        ("effect", "sweep"): 6,  # 3 levels x (all, unseen)
        ("interaction", "sweep"): 4,  # 2 later levels x 2 slices
        ("zero-shot", "zero-shot"): 12,  # 3 levels x 2 arms x 2 slices
    }
    eff = rows[rows["kind"] == "effect"].set_index(["slice", "level"])["diff"]
    inter = rows[rows["kind"] == "interaction"].set_index(["slice", "level"])["diff"]
    assert inter[("all", "c vs a")] == pytest.approx(eff[("all", "c")] - eff[("all", "a")], abs=1e-12)
    assert (rows["p_adjusted"] >= rows["p_value"] - 1e-15).all()
    called = rows["significant"]
    assert ((rows["ci_low"] > 0) | (rows["ci_high"] < 0)).eq(called).all()  # intervals agree with the calls
    means = arm_means(levels, ["shared", "unshared"])
    assert len(means) == 3 * 2 * 3 and (means["ci_low"] <= means["mean"]).all()


def test_the_sweep_verdict_names_every_level_in_order_and_the_interaction() -> None:
    from ablation.report.sweep import sweep_verdict

    rng = np.random.default_rng(5)
    base = rng.normal(0, 1.0, QUERIES)
    levels = [_level(rng, "a", base, 0.0, True), _level(rng, "b", base, -1.5, False)]
    rows = sweep_comparisons(levels, ["shared", "unshared"])
    text = sweep_verdict(rows, ["shared", "unshared"], "model.freeze_layers", {"all": QUERIES, "unseen": 50})
    assert text.startswith("No trained arm beats the untrained encoder on the 50 unseen test queries")
    assert text.index("In full: ") < text.index("Question: does the effect of unshared (separate towers) against")
    plain = text[: text.index("In full: ")]  # two sentences: against zero-shot, then the interaction
    assert (
        plain.count(". ") == 1 and plain.endswith(".\n\n") and "With model.freeze_layers, on unseen queries: " in plain
    )
    assert text.index("unshared − shared on all 150 test queries: a ") < text.index("; b ")
    assert (
        "Interaction of unshared − shared (effect at a level minus effect at the first) on all queries: b vs a -0."
        in text
    )
    assert "shared beats unshared at b on all queries by 0." in text
    assert "the effect of unshared changes with model.freeze_layers" in text


def test_the_sweep_verdict_covers_every_arm_and_says_not_tested_with_too_few_seeds() -> None:
    from ablation.report.sweep import sweep_verdict

    rng = np.random.default_rng(6)
    base = rng.normal(0, 1.0, QUERIES)
    arms = ["shared", "unshared", "shared_projection"]
    levels = [_level(rng, "a", base, 0.0, True, arms), _level(rng, "b", base, -1.5, False, arms)]
    rows = sweep_comparisons(levels, arms)
    text = sweep_verdict(rows, arms, "train.loss", {"all": QUERIES, "unseen": 50})
    assert "shared_projection − shared on all 150 test queries: a " in text
    assert "Interaction of shared_projection − shared" in text and "Interaction of unshared − shared" in text
    few = rows.assign(n_seeds=2, significant=False)
    text = sweep_verdict(few, arms, "train.loss", {"all": QUERIES, "unseen": 50})
    assert text.startswith("Whether a trained arm beats the untrained encoder on the 50 unseen test queries")
    assert "is not tested (2 seed(s); 3 needed)" in text and "nothing is tested: 2 seed(s) per arm" in text
    assert "no change" not in text and "no arm at any level beats" not in text
    assert "With train.loss, on unseen queries: whether the effect of unshared changes is not tested (2 seeds)" in text
