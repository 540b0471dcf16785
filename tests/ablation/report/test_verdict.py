"""The verdict paragraph says what the numbers say, against the untrained encoder too, with a size caveat."""

from __future__ import annotations

import pandas as pd

from ablation.report.verdict import verdict


def _row(arm: str, ref: str, slice_: str, diff: float, se: float, p: float, p_holm: float, **kw: object) -> dict:
    half = 2.0 * se
    return {
        "arm": arm,
        "reference": ref,
        "slice": slice_,
        "mode": "retrieval",
        "task": "mean",
        "diff": diff,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "se": se,
        "df": 60.0,
        "p_value": p,
        "p_adjusted": p_holm,
        "n_queries": 783 if slice_ == "unseen" else 1401,
        "n_seeds": 3,
        "significant": p_holm < 0.05,
        "family": kw.get("family", "headline"),
    }


def test_the_quick_studys_numbers_read_as_what_they_mean() -> None:
    """The case that was misread: shared beats unshared on unseen queries only because unshared lost to the
    untrained encoder, which neither arm beats."""
    comp = pd.DataFrame(
        [
            _row("unshared", "shared", "all", -0.095, 0.03, 0.003, 0.067),
            _row("unshared", "shared", "unseen", -0.122, 0.03, 0.0005, 0.030),
            _row("unshared", "shared", "all", -0.05, 0.03, 0.1, 0.3, family="headline"),
            _row("unshared", "shared", "unseen", -0.05, 0.03, 0.1, 0.3, family="headline"),
        ]
    )
    comp.loc[2:, "mode"] = "rerank"
    zs = pd.DataFrame(
        [
            _row("shared", "zero-shot", "all", 0.02, 0.02, 0.3, 0.6, family="zero-shot"),
            _row("unshared", "zero-shot", "all", -0.08, 0.02, 0.0001, 0.0004, family="zero-shot"),
            _row("shared", "zero-shot", "unseen", 0.003, 0.045, 0.95, 0.95, family="zero-shot"),
            _row("unshared", "zero-shot", "unseen", -0.118, 0.03, 0.0001, 0.0003, family="zero-shot"),
        ]
    )
    text = verdict(comp, zs, ["shared", "unshared"], "retrieval")
    # first what a reader asks first: does training beat the untrained encoder on unseen queries; then the
    # plain reading; then the question and its numbers
    assert text.startswith("No trained arm beats the untrained encoder on the 783 unseen test queries")
    assert text.index("In full: ") < text.index("Question: does shared (one encoder shared")
    # the plain reading is two sentences: against zero-shot, then what sharing does on unseen queries
    plain = text[: text.index("In full: ")]
    assert plain.count(". ") == 1 and plain.endswith("Sharing, on unseen queries: shared beats unshared by 0.122.\n\n")
    assert "shared beats unshared by 0.122 on the 783 unseen test queries" in text
    assert "no difference between unshared and shared is detected on all 1,401 test queries" in text
    assert "neither arm beats the untrained encoder on unseen queries; unshared loses 0.118 to it" in text
    assert "shared − zero-shot +0.003" in text and "unshared − zero-shot -0.118" in text
    assert "Size: this study is too small" in text and "on all 1,401 test queries it would find" in text
    assert "unseen test queries it would find" not in text  # that difference was called: no caveat there


def test_pruned_trials_show_at_their_last_value_and_a_noisy_choice_is_named() -> None:
    import optuna

    from ablation.report.reader import StudyRuns
    from ablation.report.sections.training import tuning_notes
    from ablation.report.tuning_figures import history_figure, trials_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number, values in enumerate([[0.30, 0.40], [0.41, 0.415], [0.20, 0.39]]):
        trial = study.ask()
        trial.suggest_float("negatives.random_rate", 0, 1)
        for epoch, v in enumerate(values):
            trial.report(v, epoch)
        if number == 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, values[-1])
    table = trials_table(study)
    assert table.loc[table["number"] == 1, "value"].item() == 0.415  # its last reported value, not missing
    ax = history_figure(table, "val", "t").axes[0]
    assert "pruned (last value)" in [t.get_text() for t in ax.get_legend().get_texts()]

    key = "metrics.val/retrieval/acc_at_1/mean"
    frame = pd.DataFrame(
        [
            {"role": "trial", "arm": "shared", "state": "complete", "status": "FINISHED", key: 0.4714},
            {"role": "trial", "arm": "shared", "state": "complete", "status": "FINISHED", key: 0.4674},
            {"role": "trial", "arm": "shared", "state": "pruned", "status": "FINISHED", key: 0.48},
            *[{"role": "final", "arm": "shared", "status": "FINISHED", key: v} for v in (0.45, 0.46, 0.47)],
        ]
    )
    notes = tuning_notes(StudyRuns("s", {}, None, frame), ["shared"], "val/retrieval/acc_at_1/mean")
    assert len(notes) == 2 and "ahead of the runner-up (0.4674) by 0.0040, less than the seed-to-seed sd" in notes[0]
    assert "pruned trial(s) had reached 0.4800, past the chosen 0.4714" in notes[1]


def test_the_first_sentence_names_the_arms_that_beat_the_untrained_encoder_on_unseen_queries() -> None:
    comp = pd.DataFrame([_row("unshared", "shared", sl, -0.01, 0.03, 0.7, 0.9) for sl in ("all", "unseen")])
    zs = pd.DataFrame(
        [
            _row("shared", "zero-shot", "unseen", 0.05, 0.01, 0.0001, 0.0004, family="zero-shot"),
            _row("unshared", "zero-shot", "unseen", 0.04, 0.01, 0.0002, 0.0006, family="zero-shot"),
        ]
    )
    text = verdict(comp, zs, ["shared", "unshared"], "retrieval")
    assert text.startswith("shared and unshared beat the untrained encoder on the 783 unseen test queries")
    assert "Sharing, on unseen queries: unshared and shared are not told apart (the study would find ±0.094)." in text
    zs.loc[1, ["p_adjusted", "significant"]] = [0.2, False]
    text = verdict(comp, zs, ["shared", "unshared"], "retrieval")
    assert text.startswith(
        "shared beats the untrained encoder on the 783 unseen test queries (neither text in "
        "training): shared +0.050 (adjusted 95 % CI"
    )
    zs["n_seeds"] = 2
    text = verdict(comp, zs, ["shared", "unshared"], "retrieval")
    assert text.startswith(
        "Whether a trained arm beats the untrained encoder on the 783 unseen test queries "
        "(neither text in training) is not tested (2 seed(s); 3 needed)."
    )
    assert "nothing is tested with so few seeds" in text and "neither arm beats" not in text
    comp["n_seeds"] = 2
    assert "Sharing, on unseen queries: unshared against shared is not tested (2 seeds)." in verdict(
        comp, zs, ["shared", "unshared"], "retrieval"
    )
