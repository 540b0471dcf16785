"""`make bench` results as a readable Markdown table: one row per measure, with its goal."""

from __future__ import annotations

import json

GOALS: dict[str, str] = {
    "P1": "a harness training step (recording, diagnostics, MLflow) costs at most 5 % more than a bare loop",
    "P2": "the vectorised evaluation of all 8 tasks is at least 100x faster than the old per-pair loops",
    "P3": "refreshing negatives from training-pass vectors takes at most 5 % of an epoch",
    "P4": "length-bucketed padding encodes at least 1.3x the tokens/s of padding to max_length",
    "P5": "the smoke study takes at most 90 s, the quick study at most 15 min",
    "P6": "peak memory of one quick run per arm (reported, no goal)",
    "P8": "bf16 under CPU autocast: a quick step at least 1.6x faster than fp32 on CPUs with AVX-512 BF16 or AMX",
    "P7": "the frozen-prefix cache: a quick trial at least 2x faster, encoding the test split at least 2.5x, "
    "checking its digests at most 2% of a trial",
    "P9": "a training step at 128 tokens under each loss, and its FLOP rate against the same machine's matmul rate "
    "(goal: at least 0.5 in bf16)",
    "threads": "workers that split the cores between them (the runner's default) vs each using every core",
    "tests": "the tests marked `device` pass on the device that `make gpu-check` names",
    "repeat": "one quick trial trained twice under one seed gives the same losses and validation metrics",
    "sweep-level": "one level of the depth sweep runs as its sub-study on the device; its step time (reported)",
    "index": "the faster neighbour index for mining at the full training split's size",
}


def _yes(r: dict) -> str:
    return "yes" if r["met"] else "no"


def _p1(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"{r['arm']} step: harness {r['harness_step_s']:.3f} s vs bare {r['bare_step_s']:.3f} s"
        + (f" (system metrics every {r['system_metrics_s']:g} s)" if r.get("system_metrics_s") else ""),
        f"{r['ratio']:.3f}×",
        f"≤ 1.05: {'yes' if r['met'] else 'no'}",
    )


def _p2(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"8 tasks, {r['queries']} queries: {r['vectorised_s'] * 1000:.0f} ms vs {r['per_pair_loops_s']:.2f} s "
        f"per pair, median of {r['rounds']} rounds"
        f" ({min(r['round_speedups']):.0f}-{max(r['round_speedups']):.0f}×; same acc@1: {r['same_acc_at_1']})",
        f"{r['speedup']:.0f}×",
        f"≥ 100×: {'yes' if r['met'] else 'no'}",
    )


def _p3(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"refresh: re-encode {r['refresh_reencode_s']:.2f} s ({r['share_reencode']:.1%} of epoch) vs reuse "
        f"{r['refresh_reuse_s'] * 1000:.1f} ms",
        f"{r['share_reuse']:.2%}",
        f"≤ 5 %: {'yes' if r['met'] else 'no'}",
    )


def _index(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"mining {r['queries']}×{r['candidates']}, dim {r['dim']}: BallTree {r['balltree_s']:.2f} s, brute "
        f"{r['brute_s']:.2f} s",
        r["faster"],
        "choose the faster",
    )


def _p4(r: dict) -> tuple[str, str, str, str]:
    parts = ", ".join(
        f"{L}: {v['ratio']:.2f}× ({v['truncated_share']:.0%} truncated)" for L, v in r["by_max_length"].items()
    )
    return (
        r["id"],
        f"tokens/s bucketed vs fixed padding by max_length — {parts}",
        f"{r['ratio']:.2f}×",
        f"≥ 1.3×: {'yes' if r['met'] else 'no'}",
    )


def _p5(r: dict) -> tuple[str, str, str, str]:
    quick = (
        f"{r['quick_s_recorded']:.0f} s" if r["quick_s_recorded"] is not None else "not recorded (run make ablation)"
    )
    return (
        r["id"],
        f"smoke study {r['smoke_s']:.0f} s; quick study (last make ablation) {quick}",
        "",
        f"≤ 90 s / ≤ 900 s: {'yes' if r['met'] else 'no'}",
    )


def _p6(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"peak RSS of a quick run: shared {r['shared_peak_rss_mib']:.0f} MiB, "
        f"unshared {r['unshared_peak_rss_mib']:.0f} MiB",
        f"{r['ratio_unshared_over_shared']:.2f}×",
        "report",
    )


def _p7(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"frozen-prefix cache ({r['frozen_layers']} layers + embeddings): built in {r['build_s']:.1f} s, "
        f"{r['size_mib']:.0f} MiB; quick trial {r['trial_speedup']:.2f}×, test-split encoding "
        f"{r['encode_test_speedup']:.2f}× (median of {r['rounds']} alternating rounds); checking its "
        f"digests on opening: {r.get('verify_s', float('nan')):.2f} s",
        f"{r['trial_speedup']:.2f}× / {r['encode_test_speedup']:.2f}× / "
        f"{100 * r.get('verify_share_of_trial', float('nan')):.1f} %",
        f"≥ 2× / ≥ 2.5× / ≤ 2 %: {'yes' if r['met'] else 'no'}",
    )


def _p8(r: dict) -> tuple[str, str, str, str]:
    if "skipped" in r:
        return (r["id"], f"bf16 under CPU autocast: {r['skipped']}", "—", "n/a")
    trial = (
        f"; a quick trial's {r['val_acc_fp32']:.4f} (fp32) vs {r['val_acc_bf16']:.4f} (bf16) validation "
        f"acc@1, Δ {r['val_acc_diff']:+.4f} (MRR {r.get('val_mrr_fp32', float('nan')):.4f} vs "
        f"{r.get('val_mrr_bf16', float('nan')):.4f})"
        if "val_acc_diff" in r
        else ""
    )
    return (
        r["id"],
        f"bf16 under CPU autocast ({' + '.join(r['cpu_bf16_flags'])}): quick step {r['fp32_step_s']:.3f} s "
        f"fp32 vs {r['bf16_step_s']:.3f} s bf16 (median of {r['steps']} interleaved){trial}",
        f"{r['ratio']:.2f}×",
        f"≥ 1.6×: {'yes' if r['met'] else 'no'}",
    )


def _p9(r: dict) -> tuple[str, str, str, str]:
    parts = []
    for precision, v in r["by_precision"].items():
        parts.append(
            f"{precision}: triplet {v['step_s']['triplet']:.2f} s, contrastive {v['step_s']['contrastive']:.2f} s "
            f"({v['contrastive_over_triplet']:.2f}×); {v['step_gflops_per_s']['triplet']:.0f} GFLOP/s against a "
            f"{v['matmul_gflops_per_s']:.0f} GFLOP/s matmul ({v['share_of_matmul']['triplet']:.2f})"
        )
    shares = "/".join(f"{v['share_of_matmul']['triplet']:.2f}" for v in r["by_precision"].values())
    return (
        r["id"],
        f"step of {r['batch_size']} × 3 texts of {r['max_length']} tokens, {r['frozen_layers']} layers frozen, "
        f"{r['torch_threads']} threads — " + "; ".join(parts),
        shares,
        f"≥ {0.5} in bf16: {_yes(r)}",
    )


def _tests(r: dict) -> tuple[str, str, str, str]:
    return (r["id"], f"tests marked `device` on {r['device']}: {r['summary']}", f"{r['seconds']:.0f} s", _yes(r))


def _repeat(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"quick trial twice under one seed ({r['steps']} steps, {r['trial_s'][0]:.0f} s each): max abs Δ loss "
        f"{r['max_abs_loss_diff']:.3g}; {r['metric']} {r['val_first']} vs {r['val_second']}",
        "same" if r["met"] else "differs",
        f"identical: {'yes' if r['met'] else 'no'}",
    )


def _sweep_level(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"sweep level {r['level']} ({r['runs']} runs, batch {r['batch_size']}, {r['precision']}) in "
        f"{r['level_s']:.0f} s; unshared step {r['step_s']:.3f} s",
        f"{r['step_s']:.3f} s/step",
        "ran: yes",
    )


def _threads(r: dict) -> tuple[str, str, str, str]:
    return (
        r["id"],
        f"{r['workers']} workers × {r['steps']} quick steps on {r['cores']} cores: {r['threads_split']} thread(s) "
        f"each {r['split_s']:.1f} s vs {r['cores']} each {r['all_cores_s']:.1f} s",
        f"{r['ratio']:.2f}×",
        f"keep the faster: {r['faster']}",
    )


ROWS = {
    "P1": _p1,
    "P2": _p2,
    "P3": _p3,
    "index": _index,
    "P4": _p4,
    "P5": _p5,
    "P6": _p6,
    "P7": _p7,
    "P8": _p8,
    "P9": _p9,
    "tests": _tests,
    "repeat": _repeat,
    "sweep-level": _sweep_level,
    "threads": _threads,
}
"""Each measure's row: (id, what was measured, result, goal met?)."""


def _row(r: dict) -> tuple[str, str, str, str]:
    """(id, what was measured, result, goal met?) of one measure; an unknown one as its raw JSON."""
    known = ROWS.get(r["id"])
    return known(r) if known else (r["id"], json.dumps(r), "", "")


def readable_table(results: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = ["| id | measure | result | goal |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines)
