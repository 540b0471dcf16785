"""The report of a sweep: the arm effect at each level and whether it changes with the level, against
zero-shot at each level, a figure of both against the level, and each level's own full report beneath
(`reports/<sweep>/<level study>/`). Numbers come from MLflow, through `sweep_stats`."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ablation.errors import redact
from ablation.io import REPO_ROOT, write_csv_atomic, write_text_atomic
from ablation.names import TASKS
from ablation.report.build import ReportPaths, build_report
from ablation.report.levels import find_sweep, level_order
from ablation.report.publish import VIEW_COLUMNS, VIEW_CURVES
from ablation.report.reader import read_study
from ablation.report.render import Section, Table, to_html, to_markdown
from ablation.report.sections.anchors import anchors_section, anchors_table
from ablation.report.stats import MIN_SEEDS
from ablation.report.sweep_figure import sweep_figure
from ablation.report.sweep_stats import LevelRuns, arm_means, sweep_comparisons
from ablation.report.tables import summary
from ablation.report.verdict import SIDES, as_comparison, beats_untrained
from ablation.tracking.store import NOTE_TAG, Tracker
from ablation.tracking.view import view_state, view_tag


def _levels(name: str, uri: str, experiment: str | None) -> tuple[list[LevelRuns], list[str]]:
    """The sweep's levels, each read with its zero-shot reference, and the arms."""
    out = [
        LevelRuns(label, sub, read_study(sub, uri, experiment, zero), zero)
        for label, sub, zero in level_order(name, uri, experiment)
    ]
    arms = list((out[0].runs.config.get("study") or {}).get("arms") or ["shared", "unshared"]) if out else []
    return out, arms


def _fmt(r: pd.Series) -> str:
    return f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"


def _beats_first(rows: pd.DataFrame, sizes: dict[str, int]) -> str:
    """Whether any (arm, level) beats the untrained encoder on unseen queries, and which."""
    zs = rows[(rows["kind"] == "zero-shot") & (rows["slice"] == "unseen")]
    parts = [(f"{r['arm']} at {r['level']}", as_comparison(r)) for _, r in zs.iterrows()]
    return beats_untrained(parts, sizes.get("unseen", 0))


def _plain_interaction(rows: pd.DataFrame, arms: list[str], axis: str, tested: bool) -> str:
    """The verdict's second sentence: whether the arm effect changes with the axis on unseen queries."""
    slice_ = "unseen" if (rows["slice"] == "unseen").any() else "all"
    parts = []
    for arm in arms[1:]:
        inter = rows[(rows["kind"] == "interaction") & (rows["slice"] == slice_) & (rows["arm"] == arm)]
        called = inter[inter["significant"]]
        if inter.empty:
            continue
        if not tested:
            parts.append(f"whether the effect of {arm} changes is not tested ({int(inter['n_seeds'].min())} seeds)")
        elif not called.empty:
            levels = ", ".join(f"{r['level']}: {r['diff']:+.3f}" for _, r in called.iterrows())
            parts.append(f"the effect of {arm} against {arms[0]} changes ({levels})")
        else:
            parts.append(f"no change of the effect of {arm} is detected")
    return f"With {axis}, on {slice_} queries: " + ("; ".join(parts) or "no level to compare") + "."


def _slice_lines(
    rows: pd.DataFrame, arms: list[str], axis: str, slice_: str, where: str, tested: bool
) -> tuple[list[str], list[str]]:
    """The numbers and readings of one slice: effects and interactions per arm, then against zero-shot."""
    ref, text, readings = arms[0], [], []
    for arm in arms[1:]:
        eff = rows[(rows["kind"] == "effect") & (rows["slice"] == slice_) & (rows["arm"] == arm)]
        if eff.empty:
            continue
        text.append(
            f"{arm} − {ref} on {where}: " + "; ".join(f"{r['level']} {_fmt(r)}" for _, r in eff.iterrows()) + "."
        )
        for _, r in eff[eff["significant"]].iterrows():
            better, worse = (arm, ref) if r["diff"] > 0 else (ref, arm)
            readings.append(f"{better} beats {worse} at {r['level']} on {slice_} queries by {abs(r['diff']):.3f}")
        inter = rows[(rows["kind"] == "interaction") & (rows["slice"] == slice_) & (rows["arm"] == arm)]
        if inter.empty:
            continue
        text.append(
            f"Interaction of {arm} − {ref} (effect at a level minus effect at the first) on {slice_} queries: "
            + "; ".join(f"{r['level']} {_fmt(r)}" for _, r in inter.iterrows())
            + "."
        )
        called = inter[inter["significant"]]
        if not called.empty:
            changes = ", ".join(f"{r['level']}: {r['diff']:+.3f}" for _, r in called.iterrows())
            readings.append(f"the effect of {arm} changes with {axis} on {slice_} queries ({changes})")
        elif tested:
            readings.append(f"no change of the effect of {arm} with {axis} is detected on {slice_} queries")
    zs = rows[(rows["kind"] == "zero-shot") & (rows["slice"] == slice_)]
    if not zs.empty:
        text.append(
            f"Against the untrained encoder on {slice_} queries: "
            + "; ".join(f"{r['arm']} at {r['level']} {_fmt(r)}" for _, r in zs.iterrows())
            + "."
        )
        above = zs[zs["significant"] & (zs["diff"] > 0)]
        if not above.empty:
            who = " and ".join(f"{r['arm']} at {r['level']}" for _, r in above.iterrows())
            readings.append(f"on {slice_} queries {who} {'beats' if len(above) == 1 else 'beat'} the untrained encoder")
        elif tested:
            readings.append(f"no arm at any level beats the untrained encoder on {slice_} queries")
    return text, readings


def sweep_verdict(rows: pd.DataFrame, arms: list[str], axis: str, sizes: dict[str, int]) -> str:
    """The sweep's answer in two paragraphs. The plain reading first, in two sentences: whether any
    trained arm beats the untrained encoder on unseen queries, and whether the arm effect changes with the
    axis there. Then the reading in full, each arm's effect against the first per level with the interval
    that makes the call, the interaction rows, and each arm against zero-shot per level."""
    if rows.empty or len(arms) < 2:
        return "No verdict: no level has finished final runs of two arms with per-query results."
    ref = arms[0]
    others = " and ".join(f"{a} ({SIDES.get(a, a)})" for a in arms[1:])
    text = [
        f"Question: does the effect of {others} against {ref} ({SIDES.get(ref, ref)}) change "
        f"with {axis}? Mean retrieval acc@1 over the 8 test tasks, paired by seed and query; intervals are 95 % "
        "Holm-adjusted (arm effects and interactions one family, the rows against zero-shot another)."
    ]
    readings = []
    tested = bool(rows["n_seeds"].min() >= MIN_SEEDS)
    for slice_ in ("all", "unseen"):
        where = f"all {sizes.get('all', 0)} test queries" if slice_ == "all" else f"the {sizes.get('unseen', 0)} unseen"
        lines, read = _slice_lines(rows, arms, axis, slice_, where, tested)
        text += lines
        readings += read
    if not tested:
        readings.append(
            f"nothing is tested: {int(rows['n_seeds'].min())} seed(s) per arm, {MIN_SEEDS} needed to estimate "
            "the seed variance"
        )
    elif not readings:
        readings.append("no difference is called at any level")
    plain = _beats_first(rows, sizes) + " " + _plain_interaction(rows, arms, axis, tested)
    return plain + "\n\nIn full: " + "; ".join(readings) + ". " + " ".join(text)


def _task_table(levels: list[LevelRuns], arms: list[str]) -> Table:
    """Retrieval acc@1 per level, arm and task (mean over seeds), all and unseen queries."""
    header = ["level", "arm", "slice", *TASKS, "mean"]
    rows = []
    for lv in levels:
        table = summary(lv.runs, arms)
        part = table[(table["mode"] == "retrieval") & (table["metric"] == "acc_at_1")]
        for arm in (*arms, "zero-shot"):
            for slice_ in ("all", "unseen"):
                cells = part[(part["arm"] == arm) & (part["slice"] == slice_)].set_index("task")["mean"]
                if not cells.empty:
                    rows.append(
                        [lv.label, arm, slice_, *(f"{cells.get(t, float('nan')):.3f}" for t in (*TASKS, "mean"))]
                    )
    return Table(header, rows)


def _comparison_table(rows: pd.DataFrame) -> Table:
    header = ["kind", "level", "arm − reference", "slice", "diff", "adjusted 95 % CI", "Holm p", "seeds", "call"]
    body = [
        [
            r["kind"],
            r["level"],
            f"{r['arm']} − {r['reference']}",
            r["slice"],
            f"{r['diff']:+.3f}",
            f"{r['ci_low']:+.3f} to {r['ci_high']:+.3f}",
            f"{r['p_adjusted']:.3g}",
            str(int(r["n_seeds"])),
            r["call"],
        ]
        for _, r in rows.iterrows()
    ]
    return Table(header, body)


def build_sweep_report(name: str, uri: str, out_dir: str | None = None, experiment: str | None = None) -> ReportPaths:
    """Each level's report, then the sweep's own: report.md, report.html, sweep.png and summary.csv."""
    out = Path(out_dir) if out_dir else REPO_ROOT / "reports" / name
    sweep_run = find_sweep(name, uri, experiment)
    levels, arms = _levels(name, uri, experiment)
    for lv in levels:
        build_report(lv.name, uri, str(out / lv.name), experiment, lv.zero_shot_from)
    axis = sweep_run.data.tags.get("sweep_axis", "the level")
    rows = sweep_comparisons(levels, arms)
    means = arm_means(levels, arms)
    sizes = {s: int(rows[rows["slice"] == s]["n_queries"].max()) for s in ("all", "unseen") if not rows.empty}
    answer = sweep_verdict(rows, arms, axis, sizes)
    fig = sweep_figure(rows, means, arms, [lv.label for lv in levels], axis)
    length = (levels[0].runs.config.get("model") or {}).get("max_length") if levels else None
    sections = [
        Section("Verdict", "The arm effect at each level and whether it changes with the level.").paragraphs(answer),
        *(
            [anchors_section(anchors)]
            if (anchors := anchors_table({lv.label: summary(lv.runs, arms) for lv in levels}, arms, length))
            else []
        ),
        Section(
            "Levels",
            "Each level is a complete study with the same budget; its own report is linked below.",
        ).items([f"{lv.label}: study {lv.name}, report {lv.name}/report.html" for lv in levels]),
        Section("Comparisons", "Every row of the verdict; family `sweep`: effects and interactions.").table(
            _comparison_table(rows)
        ),
        Section("Accuracy per task", "Test retrieval acc@1, mean over seeds, per level and arm.").table(
            _task_table(levels, arms)
        ),
    ]
    images = {}
    if fig is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        images["sweep.png"] = buf.getvalue()
        sections[0].figure("sweep.png", f"The effect and each arm's acc@1 against {axis}")
    out.mkdir(parents=True, exist_ok=True)
    for image, data in images.items():
        write_text_atomic(data, out / image)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "summary.csv")
    write_csv_atomic(pd.concat([rows, means.assign(kind="mean")], ignore_index=True), paths.summary)
    title = f"Sweep report: {name}"
    write_text_atomic(redact(to_markdown(title, sections)), paths.markdown)
    write_text_atomic(redact(to_html(title, sections, images)), paths.html)
    tracker = Tracker(uri)
    tracker.set_tags(sweep_run.info.run_id, {NOTE_TAG: answer})
    view = view_state(name, VIEW_COLUMNS, VIEW_CURVES, sweep=True)
    tracker.set_experiment_tags(sweep_run.info.experiment_id, {NOTE_TAG: answer, **view_tag(name, view)})
    for p in (paths.html, paths.markdown, paths.summary):
        tracker.log_artifact(sweep_run.info.run_id, p, "report")
    return paths


def build_study_or_sweep(
    study: str, tracking_uri: str, out_dir: str | None = None, experiment: str | None = None
) -> ReportPaths:
    """The report of `study`: a sweep's (with one per level beneath it) or a single study's."""
    if find_sweep(study, tracking_uri, experiment) is not None:
        return build_sweep_report(study, tracking_uri, out_dir, experiment)
    return build_report(study, tracking_uri, out_dir, experiment)
