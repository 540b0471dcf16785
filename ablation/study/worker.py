"""One worker's loop: take the next work item from the study's queues (the zero-shot run, tuning trials per
arm, final seeds of each arm whose tuning is done), run it, tell Optuna its outcome; wait while other live
workers hold the last items; return when nothing is open. A background watcher beats this worker's
heartbeat and fails the trials of stopped workers within `lease_s`, even while everyone is mid-run
(`liveness.py`). `worker_main` is a worker process's entry point, spawned by `runner.py`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

import optuna
import torch
from optuna.trial import TrialState
from optuna_dashboard import save_note

from ablation.config import ExperimentConfig, replace_path
from ablation.errors import RedactingStream
from ablation.io import git_commit
from ablation.names import Role
from ablation.runtime import INTERRUPTS, parent_gone
from ablation.study.context import COUNTED, POLL_S, SLOT, StudyContext, used
from ablation.study.liveness import TrialLease, Watcher
from ablation.study.opening import end_study_runs, open_study
from ablation.study.queue import fill, pop, sample, slots
from ablation.study.storage import LockLost, retry_stale
from ablation.study.tracked_run import describe, run_tags, tracked_fit
from ablation.tracking.store import NOTE_TAG, RunSuperseded
from ablation.tracking.view import COLOR_TAG, ZERO_SHOT_COLOR, arm_colors, run_url, trial_url, ui_base
from ablation.training.trainer import NonFiniteLoss

KILL_AFTER_TRIALS = "ABLATION_KILL_AFTER_TRIALS"
"""Fault injection, for tests of resume: with this variable set to N, a process that has finished N trials
kills itself with SIGKILL after the first epoch of its next trial, leaving a RUNNING trial and MLflow run
behind exactly as a crash or `kill -9` would."""

STOP_AT = "ABLATION_STOP_AT"
"""Fault injection, for tests of frozen machines: `lock` stops this process (SIGSTOP) right after it first
takes the study lock, `final` in the first epoch of its first final run; a test resumes it with SIGCONT."""

Item = tuple[str, str, optuna.Study, optuna.Trial, ExperimentConfig]


def best_params(queue: optuna.Study) -> dict[str, float]:
    """The best complete trial's parameters (empty when no trial completed: the defaults)."""
    if not queue.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    return queue.best_trial.params


def _all_used(ctx: StudyContext, kind: str, queue: optuna.Study) -> bool:
    done = {t.user_attrs.get(SLOT) for t in queue.get_trials(deepcopy=False) if used(t)}
    return set(slots(ctx, kind)) <= done


def _next(ctx: StudyContext) -> Item | None:
    """Under the study lock: the next item this worker can run, taken from its queue. Work retried after a
    dead or stopped worker comes first, from whichever queue; then the queues in their order."""
    with ctx.lock() as held:
        _stop_here("lock")
        for only_retried in (True, False):
            for kind, arm, queue in ctx.queues():
                if kind == "final" and not _all_used(ctx, "tuning", ctx.queue("tuning", arm)):
                    continue  # its best parameters are not known yet
                if not only_retried:
                    fill(ctx, kind, queue, held)
                trial = pop(ctx, kind, queue, held, only_retried)
                if trial is not None:
                    return _item(ctx, kind, arm, queue, trial)
    return None


def _item(ctx: StudyContext, kind: str, arm: str, queue: optuna.Study, trial: optuna.Trial) -> Item:
    """The item's config: the arm, and the trial's parameters (tuning) or the arm's best ones and the seed."""
    cfg = replace_path(ctx.cfg, "model.sharing", arm) if arm else ctx.cfg
    if kind == "tuning":
        cfg = sample(ctx, queue, trial, replace_path(cfg, "seed", ctx.cfg.study.tuning_seed))
    elif kind == "final":
        for key, value in best_params(ctx.queue("tuning", arm)).items():
            cfg = replace_path(cfg, key, value)
        cfg = replace_path(cfg, "seed", trial.user_attrs[SLOT])
    return kind, arm, queue, trial, cfg


def _stop_here(point: str) -> None:
    if os.environ.get(STOP_AT) == point:
        os.environ.pop(STOP_AT)  # once
        os.kill(os.getpid(), signal.SIGSTOP)


def open_items(ctx: StudyContext) -> bool:
    """Whether any queue still has work: an item waiting or running, or a slot not used yet."""
    return not all(_all_used(ctx, kind, queue) for kind, _, queue in ctx.queues())


def work(ctx: StudyContext) -> None:
    """Run items until no queue has work left (see the module's docstring)."""
    watcher = Watcher(ctx, [q for _, _, q in ctx.queues()], ctx.cfg.study.lease_s)
    try:
        while True:
            try:
                item = _next(ctx)
            except (LockLost, optuna.exceptions.UpdateFinishedTrialError) as exc:
                # the lock, or the trial being taken, went to another worker while this one waited on the store
                print(f"warning: {exc}; taking the next item again", file=sys.stderr, flush=True)
                continue
            if item is not None:
                _run(ctx, *item)
            elif not open_items(ctx):
                return
            else:
                time.sleep(POLL_S)
    finally:
        watcher.stop()


def _run(
    ctx: StudyContext, kind: str, arm: str, queue: optuna.Study, trial: optuna.Trial, cfg: ExperimentConfig
) -> None:
    """Run one item and tell Optuna how it ended. An interrupted or crashed item is failed and queued again;
    one taken over while this worker was stopped is left to the taker."""
    lease = ctx.lease = TrialLease(ctx.storage, ctx.heartbeats, ctx.cfg.study.lease_s, trial)
    start = time.monotonic()
    try:
        value, pruned = (
            _zero_shot(ctx, queue, trial, lease) if kind == "zero-shot" else _train(ctx, kind, queue, trial, cfg, lease)
        )
        lease.guard()
        label = "" if kind == "zero-shot" else str(trial.number) if kind == "tuning" else f"seed {cfg.seed}"
        role = Role.TRIAL if kind == "tuning" else Role(kind)
        if pruned:
            _tell(queue, trial, state=TrialState.PRUNED)
        elif value is None:
            lease.write(lambda: trial.set_user_attr(COUNTED, True))
            _tell(queue, trial, state=TrialState.FAIL)
        else:
            _tell(queue, trial, value)
        # after the outcome reached Optuna: a line says "done" only of work that a kill cannot undo
        ctx.progress.run_done(arm or "zero-shot", role, label, value, time.monotonic() - start, pruned)
    except RunSuperseded as exc:
        print(f"warning: {exc}; this worker goes on with other work", file=sys.stderr, flush=True)
    except NonFiniteLoss as exc:  # the run is FAILED with the reason; the slot is used, the study goes on
        print(f"warning: {kind} {arm} {trial.number} failed: {exc}", file=sys.stderr, flush=True)
        reason = str(exc)
        try:
            lease.write(lambda: trial.set_user_attr(COUNTED, True))
            lease.write(lambda: trial.set_user_attr("failure", reason))
        except RunSuperseded as lost:
            print(f"warning: {lost}; this worker goes on with other work", file=sys.stderr, flush=True)
            return
        _tell(queue, trial, state=TrialState.FAIL)
    except BaseException:
        if not lease.lost:
            _tell(queue, trial, state=TrialState.FAIL)
            retry_stale(queue, ctx.storage.get_trial(trial._trial_id))
        raise
    finally:
        ctx.lease = None


def _tell(queue: optuna.Study, trial: optuna.Trial, value: float | None = None, **kw: TrialState) -> None:
    """Tell an outcome, unless another worker failed the trial first (then it is dropped with a warning)."""
    try:
        queue.tell(trial, value, **kw)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        print(
            f"warning: trial {trial.number} was failed by another worker ({exc}); its result is dropped",
            file=sys.stderr,
        )


def _item_tags(ctx: StudyContext, queue: optuna.Study, trial: optuna.Trial) -> dict[str, str]:
    return {
        **ctx.me,
        **ctx.level_tags,
        "study": ctx.cfg.study.name,
        "optuna_study": queue.study_name,
        "optuna_trial": str(trial.number),
    }


def _train(
    ctx: StudyContext, kind: str, queue: optuna.Study, trial: optuna.Trial, cfg: ExperimentConfig, lease: TrialLease
) -> tuple[float | None, bool]:
    """A tuning trial (validation only, reported to Optuna each epoch, may be pruned) or a final run (tested)."""
    objective, arm = ctx.cfg.study.objective, cfg.model.sharing
    kill_after = os.environ.get(KILL_AFTER_TRIALS)

    def on_epoch(epoch: int, val: dict[str, float]) -> None:
        if kind == "final":
            _stop_here("final")
        lease.guard()
        if kind != "tuning":
            return
        if kill_after and _finished_here(queue, ctx.me["worker"]) >= int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
        lease.write(lambda: trial.report(val[objective], epoch))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    params = dict(trial.params) if kind == "tuning" else best_params(ctx.queue("tuning", arm))
    tags = {
        **_item_tags(ctx, queue, trial),
        "role": Role.FINAL if kind == "final" else Role.TRIAL,
        "slot": str(trial.user_attrs[SLOT]),
        COLOR_TAG: arm_colors(list(ctx.cfg.study.arms))[arm],
    }
    if kind == "tuning":
        tags["trial"] = str(trial.number)
        tags[NOTE_TAG] = describe(Role.TRIAL, arm, cfg.seed, params, trial=f"trial {trial.number}")
        name = f"{arm}-trial{trial.number}"
    else:
        tags.update({f"best.{k}": f"{v:.6g}" for k, v in params.items()})
        tags[NOTE_TAG] = describe(Role.FINAL, arm, cfg.seed, params)
        name = f"{arm}-seed{cfg.seed}"
    result, state = tracked_fit(
        ctx.tracker,
        cfg,
        ctx.data,
        ctx.experiment,
        name,
        tags,
        ctx.arm_runs[arm],
        on_epoch,
        run_test=kind == "final",
        guard=lease.guard,
        on_create=lambda run_id: _link(ctx, queue, trial, lease, run_id),
    )
    value = result.val_history[-1].get(objective) if result.val_history else None
    return value, state == "pruned"


def _link(ctx: StudyContext, queue: optuna.Study, trial: optuna.Trial, lease: TrialLease, run_id: str) -> None:
    """One click between the tools: the trial names its MLflow run (id, URL, and a dashboard note with the
    link), the run names its trial's optuna-dashboard page (tag and description)."""
    url = run_url(ui_base(ctx.tracker.uri), ctx.tracker.experiment_id(ctx.experiment), run_id)
    lease.write(lambda: trial.set_user_attr("mlflow_run_id", run_id))
    lease.write(lambda: trial.set_user_attr("mlflow_url", url))
    lease.write(lambda: save_note(trial, f"MLflow run [{run_id}]({url})"))
    page = trial_url(queue._study_id, trial.number)
    note = ctx.tracker.client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    ctx.tracker.set_tags(run_id, {"optuna_dashboard": page, NOTE_TAG: f"{note} Optuna trial: {page} (make dashboard)"})


def _finished_here(queue: optuna.Study, worker: str) -> int:
    return sum(
        t.state != TrialState.RUNNING and t.user_attrs.get("worker") == worker for t in queue.get_trials(deepcopy=False)
    )


def _zero_shot(
    ctx: StudyContext, queue: optuna.Study, trial: optuna.Trial, lease: TrialLease
) -> tuple[float | None, bool]:
    """The pretrained encoder, untrained, on the validation and test splits: the reference row."""
    from ablation.evaluation.zeroshot import ZeroShot
    from ablation.runtime import describe_device, resolve_device

    device = resolve_device(ctx.cfg.train.device)
    tags = {
        **run_tags(ctx.cfg, ctx.data),
        **_item_tags(ctx, queue, trial),
        "role": Role.ZERO_SHOT,
        "arm": "zero-shot",
        "device": describe_device(device),
        COLOR_TAG: ZERO_SHOT_COLOR,
        NOTE_TAG: describe(Role.ZERO_SHOT, "zero-shot", model=ctx.cfg.model.name),
    }
    model = ZeroShot(ctx.cfg.model, ctx.cfg.eval.batch_size, device)  # loaded before the run is created
    on_create = lambda run_id: _link(ctx, queue, trial, lease, run_id)  # noqa: E731
    with ctx.tracker.run(ctx.experiment, "zero-shot", tags, guard=lease.guard, on_create=on_create) as rec:
        if ctx.cfg.study.level:
            rec.log_params({"study.level": ctx.cfg.study.level})
        ks = ctx.cfg.eval.ks
        val = model.evaluate(ctx.data.val, ctx.cfg.eval.val_tasks, ks)
        res = model.evaluate(ctx.data.test, ks=ks)
        rec.log_metrics({f"val/{k}": v for k, v in val.metrics.items()}, step=0)
        rec.log_metrics({f"test/{k}": v for k, v in {**res.metrics, **res.slice_sizes}.items()}, step=0)
        rec.log_text(res.per_query.to_csv(index=False), "per_query_test.csv")
    return val.metrics.get(ctx.cfg.study.objective.removeprefix("val/")), False


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (a `kill -9` of the parent leaves no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_main(
    cfg: ExperimentConfig, corpus: str | None, tracking_uri: str | None, run_dir: str, threads: int, parent: int
) -> None:
    """A worker process: it starts with the interrupt signals blocked (the parent blocks them while it
    spawns), so a Ctrl-C during start-up waits until the handler is in place and ends it quietly."""
    INTERRUPTS.install()  # SIGTERM (also from the parent's death) ends the open run KILLED, like Ctrl-C
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    git_commit()  # the code this worker imported: its runs carry this commit
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS.SIGNALS)
        _die_with_parent()
        if parent_gone(parent):  # the parent died before the line above
            raise SystemExit(128 + signal.SIGTERM)
        torch.set_num_threads(threads)
        ctx = open_study(cfg, corpus, tracking_uri, run_dir)
        try:
            work(ctx)
        except KeyboardInterrupt:
            if parent_gone(parent):  # the parent was killed and cannot end its runs: do it for it
                end_study_runs(ctx, "KILLED", "interrupted")
            raise
        finally:
            ctx.close()
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTS.exit_code) from None
