"""The verdict: the study's answer in words, its plain reading first, then the numbers that make each
call. The same text opens the report and is the MLflow study run's and experiment's description."""

from __future__ import annotations

import math

import pandas as pd

from ablation.report.render import Section
from ablation.report.stats import MIN_SEEDS, Comparison, detectable


def as_comparison(row: pd.Series) -> Comparison:
    return Comparison(
        row["diff"],
        row["ci_low"],
        row["ci_high"],
        row["p_value"],
        int(row["n_queries"]),
        int(row["n_seeds"]),
        row["p_adjusted"],
        float(row.get("se", float("nan"))),
        float(row.get("df", float("nan"))),
    )


def slice_words(slice_: str, n: int) -> str:
    return {
        "all": f"all {n:,} test queries",
        "unseen": f"the {n:,} unseen test queries (neither text in training)",
    }.get(slice_, f"the {slice_} slice ({n:,} queries)")


SIDES = {
    "shared": "one encoder shared by the argument and the candidate side (Siamese)",
    "unshared": "separate towers",
    "shared_projection": "separate towers with one shared similarity head",
    "shared_embeddings": "separate towers sharing the token embeddings",
    "frozen_candidate": "separate towers with the candidate side frozen",
}


def _effect(c: Comparison) -> str:
    """`+0.012 (adjusted CI −0.010 to +0.034)`."""
    return f"{c.diff:+.3f} (adjusted 95 % CI {c.low:+.3f} to {c.high:+.3f})"


def _against(c: Comparison) -> str:
    if not c.seed_variance_known:
        return "cannot be told apart with so few seeds"
    if not c.significant:
        return "does not differ detectably from it"
    return f"beats it by {c.diff:.3f}" if c.diff > 0 else f"loses {-c.diff:.3f} to it"


def beats_untrained(parts: list[tuple[str, Comparison]], n_queries: int, slice_: str = "unseen") -> str:
    """The sentence a reader asks for first: whether any trained arm beats the untrained encoder on the
    slice, and which; where the seed variance is unknown, that it was not tested. `parts`: (arm label, its
    comparison against zero-shot on that slice)."""
    where = slice_words(slice_, n_queries)
    if not parts:
        return f"Whether training beats the untrained encoder on {where} was not measured (no zero-shot run)."
    if not any(c.seed_variance_known for _, c in parts):
        seeds = min(c.n_seeds for _, c in parts)
        return (
            f"Whether a trained arm beats the untrained encoder on {where} is not tested ({seeds} seed(s); "
            f"{MIN_SEEDS} needed)."
        )
    better = [(a, c) for a, c in parts if c.significant and c.diff > 0]
    if not better:
        return f"No trained arm beats the untrained encoder on {where}."
    verb = "beats" if len(better) == 1 else "beat"
    return (
        " and ".join(a for a, _ in better)
        + f" {verb} the untrained encoder on {where}: "
        + "; ".join(f"{a} {_effect(c)}" for a, c in better)
        + "."
    )


def _reading(arm: str, ref: str, c: Comparison, where: str) -> str:
    if not c.seed_variance_known:
        return f"with {c.n_seeds} seed(s) per arm no call can be made on {where}"
    if c.significant:
        better, worse = (arm, ref) if c.diff > 0 else (ref, arm)
        return f"{better} beats {worse} by {abs(c.diff):.3f} on {where}"
    return f"no difference between {arm} and {ref} is detected on {where}"


def _plain_sharing(arm: str, ref: str, c: Comparison, mde: float) -> str:
    """The sharing effect of one arm in words, for the verdict's second sentence."""
    if not c.seed_variance_known:
        return f"{arm} against {ref} is not tested ({c.n_seeds} seeds)"
    if c.significant:
        better, worse = (arm, ref) if c.diff > 0 else (ref, arm)
        return f"{better} beats {worse} by {abs(c.diff):.3f}"
    size = f" (the study would find ±{mde:.3f})" if math.isfinite(mde) else ""
    return f"{arm} and {ref} are not told apart{size}"


def _sharing(comp: pd.DataFrame, arms: list[str], mode: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Per arm: the plain phrase (unseen queries, else all), the readings, the numbers and the size caveats."""
    ref = arms[0]
    head = comp[(comp["task"] == "mean") & (comp["mode"] == mode)].set_index(["arm", "slice"])
    family = int((comp["family"] == "headline").sum() / (len(arms) - 1))
    plain, readings, numbers, caveats = [], [], [], []
    for arm in arms[1:]:
        rows = {sl: as_comparison(head.loc[(arm, sl)]) for sl in ("all", "unseen") if (arm, sl) in head.index}
        if not rows:
            continue
        numbers.append(
            f"{arm} − {ref}: "
            + "; ".join(f"{_effect(c)} on {slice_words(sl, c.n_queries)}" for sl, c in rows.items())
            + f" ({min(c.n_seeds for c in rows.values())} seeds)."
        )
        mdes = {
            sl: detectable(float(head.loc[(arm, sl)]["se"]), float(head.loc[(arm, sl)]["df"]), family) for sl in rows
        }
        key = "unseen" if "unseen" in rows else "all"
        plain.append(_plain_sharing(arm, ref, rows[key], mdes[key]))
        for sl, c in rows.items():
            where = slice_words(sl, c.n_queries)
            readings.append(_reading(arm, ref, c, where))
            if not c.significant and (math.isnan(mdes[sl]) or abs(c.diff) < mdes[sl]):
                caveats.append(
                    f"on {where} it would find a difference only from ±{mdes[sl]:.3f} on (80 % power at the Holm "
                    f"level), and the measured one, {c.diff:+.3f}, is smaller"
                    if not math.isnan(mdes[sl])
                    else f"on {where} the seed variance is unknown"
                )
    return plain, readings, numbers, caveats


def _against_zero(zs: pd.DataFrame, arms: list[str]) -> tuple[str, list[str], list[str]]:
    """The first sentence (unseen queries), the readings and the numbers against the untrained encoder."""
    first, readings, numbers = "", [], []
    zero = zs.set_index(["arm", "slice"]) if not zs.empty else pd.DataFrame()
    for sl in ("all", "unseen") if not zero.empty else ():
        parts = [(a, as_comparison(zero.loc[(a, sl)])) for a in arms if (a, sl) in zero.index]
        if not parts:
            continue
        if sl == "unseen":
            first = beats_untrained(parts, parts[0][1].n_queries)
        numbers.append(
            f"Against the untrained encoder on {slice_words(sl, parts[0][1].n_queries)}: "
            + "; ".join(f"{a} − zero-shot {_effect(c)}" for a, c in parts)
            + "."
        )
        better = [a for a, c in parts if c.significant and c.diff > 0]
        worse = [(a, c) for a, c in parts if c.significant and c.diff < 0]
        where = "unseen queries" if sl == "unseen" else "all queries"
        if not any(c.seed_variance_known for _, c in parts):
            readings.append(f"against the untrained encoder on {where} nothing is tested with so few seeds")
        elif not better:
            none = "neither arm beats" if len(parts) == 2 else "no arm beats"
            readings.append(
                f"{none} the untrained encoder on {where}"
                + "".join(f"; {a} loses {-c.diff:.3f} to it" for a, c in worse)
            )
        else:
            readings.append("; ".join(f"{a} {_against(c)} on {where}" for a, c in parts))
    return first, readings, numbers


def verdict(comp: pd.DataFrame, zs: pd.DataFrame, arms: list[str], mode: str) -> str:
    """The answer in two paragraphs that cannot be misread. The plain reading first, in two sentences:
    whether any trained arm beats the untrained encoder on unseen queries, and what sharing does there.
    Then the reading in full, the question with the sharing effect on the objective's metric on all and
    unseen queries (with the intervals that make the call), each arm against the untrained encoder, and a
    size caveat where the study is too small to detect the effect it measured. The same text is the MLflow
    experiment's and study run's description."""
    if comp.empty or len(arms) < 2:
        return "No verdict: fewer than two arms have finished final runs with per-query results."
    ref = arms[0]
    question = (
        f"Question: does {ref} ({SIDES.get(ref, ref)}) beat "
        + " and ".join(f"{a} ({SIDES.get(a, a)})" for a in arms[1:])
        + f"? Measured on mean {mode} acc@1 over the 8 test tasks, paired by seed and query."
    )
    plain, readings, numbers, caveats = _sharing(comp, arms, mode)
    first, zero_readings, zero_numbers = _against_zero(zs, arms)
    unseen = "unseen" in set(comp["slice"])
    text = (first + " " if first else "") + f"Sharing, on {'unseen' if unseen else 'all'} queries: " + "; ".join(plain)
    text += (
        ".\n\nIn full: " + "; ".join(readings + zero_readings) + ". " + " ".join([question, *numbers, *zero_numbers])
    )
    if caveats:
        text += " Size: this study is too small to settle the question: " + "; ".join(caveats) + "."
    return text


def verdict_section(answer: str, mode: str) -> Section:
    """The report's first section: the verdict, its plain reading as the first paragraph."""
    return Section(
        "Verdict",
        f"The answer on the study's objective metric ({mode} acc@1), with intervals over seeds and queries "
        "that are adjusted for the number of comparisons (they exclude 0 exactly when a difference is "
        "called); details in the comparison below.",
    ).paragraphs(answer)
