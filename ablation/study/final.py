"""Final runs and the reference row: each arm's best parameters retrained under every seed and tested, and
the pretrained encoder, untrained, on validation and test. Claims give each item to one worker."""

from __future__ import annotations

import sys
import time

from ablation.config import replace_path
from ablation.study.context import StudyContext, optuna_study
from ablation.study.ledger import clean_stale, delete_dead_runs, finished, settled
from ablation.study.tracked_run import describe, run_tags
from ablation.study.tuning import best_config, train_run
from ablation.tracking.store import NOTE_TAG
from ablation.training.trainer import NonFiniteLoss


def final_runs(ctx: StudyContext, arm: str) -> None:
    """Retrain the arm's best parameters under every seed (skipping seeds already done or claimed)."""
    cfg, params = best_config(ctx, arm)
    for seed in ctx.cfg.study.seeds:
        name = f"final-{arm}-seed{seed}"
        if settled(ctx, arm, seed) or not ctx.coord.claim(name):
            continue
        try:
            if not settled(ctx, arm, seed):
                with ctx.coord.lock():
                    clean_stale(ctx, optuna_study(ctx, arm), arm)
                tags = {"role": "final", **{f"best.{k}": f"{v:.6g}" for k, v in params.items()}}
                train_run(ctx, replace_path(cfg, "seed", seed), f"{arm}-seed{seed}", tags, ctx.arm_runs[arm])
        except NonFiniteLoss as exc:  # the run is FAILED with the reason; the study goes on
            print(f"warning: final run {arm} seed {seed} failed: {exc}", file=sys.stderr)
        finally:
            ctx.coord.release(name)


def zero_shot_run(ctx: StudyContext) -> None:
    """The pretrained encoder, untrained, on the validation and test splits: the reference row."""
    from ablation.evaluation.zeroshot import ZeroShot
    from ablation.runtime import describe_device, resolve_device

    if not ctx.cfg.study.zero_shot or finished(ctx, "zero-shot") or not ctx.coord.claim("zero-shot"):
        return
    try:
        if finished(ctx, "zero-shot"):  # finished between the look and the claim
            return
        delete_dead_runs(ctx, {"role": "zero-shot"}, ("zero-shot",))
        device = resolve_device(ctx.cfg.train.device)
        tags = {
            **run_tags(ctx.cfg, ctx.data),
            **ctx.coord.me,
            "study": ctx.cfg.study.name,
            "role": "zero-shot",
            "arm": "zero-shot",
            "device": describe_device(device),
            NOTE_TAG: describe("zero-shot", "zero-shot", model=ctx.cfg.model.name),
        }
        start = time.monotonic()
        model = ZeroShot(ctx.cfg.model, ctx.cfg.eval.batch_size, device)  # loaded before the run is created
        with ctx.tracker.run(ctx.experiment, "zero-shot", tags) as rec:  # top level, beside the arm runs
            ks = ctx.cfg.eval.ks
            val = model.evaluate(ctx.data.val, ctx.cfg.eval.val_tasks, ks)
            res = model.evaluate(ctx.data.test, ks=ks)
            rec.log_metrics({f"val/{k}": v for k, v in val.metrics.items()}, step=0)
            rec.log_metrics({f"test/{k}": v for k, v in {**res.metrics, **res.slice_sizes}.items()}, step=0)
            rec.log_text(res.per_query.to_csv(index=False), "per_query_test.csv")
        objective = ctx.cfg.study.objective
        value = val.metrics.get(objective.removeprefix("val/"))
        ctx.progress.run_done("zero-shot", "zero-shot", "", value, time.monotonic() - start)
    finally:
        ctx.coord.release("zero-shot")
