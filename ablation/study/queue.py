"""Work items as enqueued Optuna trials: filling a queue's slots, taking the next item, and holding it.

Each queue has fixed slots: tuning trial 0 … n_trials − 1, one final run per seed, one zero-shot run. A slot
is enqueued once (`enqueue_trial`, with its index or seed as the user attribute `slot`); a trial of a
stopped worker is failed and enqueued again with the same slot and parameters. A slot counts once: a
trial popped for a slot that another trial already holds or used (a race after a lost lock, an Optuna
`ask` on an empty queue) is failed as surplus and never run, so budgets are exact by construction.

Tuning points: the first min(n_trials, 10) slots carry points drawn once from `study.tuning_seed` (the same
for every arm: the comparison stays paired); later slots are sampled by TPE seeded from (tuning_seed, trial
number) when they are taken. So no two trials of an arm share parameters, whatever the number of
processes, machines and resumes.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ablation.config import ExperimentConfig, replace_path
from ablation.study.context import SLOT, StudyContext, used
from ablation.study.liveness import fail_stale, may_judge_stale
from ablation.study.storage import Held

STARTUP = 10  # TPE's own number of random startup trials: these are the enqueued fixed points


def startup_points(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """The fixed tuning points of the first slots, drawn by Optuna's random sampler under tuning_seed."""
    space = sorted(cfg.study.search_space.items())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.study.tuning_seed))
    points = []
    for _ in range(min(cfg.study.n_trials, STARTUP)):
        trial = study.ask()
        points.append({k: trial.suggest_float(k, p.low, p.high, log=p.log) for k, p in space})
        study.tell(trial, 0.0)
    return points


def slots(ctx: StudyContext, kind: str) -> dict[int, dict[str, float]]:
    """slot → its fixed parameters (empty: sampled when taken); computed once per process, since the
    config does not change (it is read under the study lock at every item taken and every poll)."""
    if kind not in ctx.slot_points:
        s = ctx.cfg.study
        if kind == "tuning":
            points = startup_points(ctx.cfg)
            ctx.slot_points[kind] = {i: points[i] if i < len(points) else {} for i in range(s.n_trials)}
        else:
            ctx.slot_points[kind] = {seed: {} for seed in s.seeds} if kind == "final" else {0: {}}
    return ctx.slot_points[kind]


def fill(ctx: StudyContext, kind: str, queue: optuna.Study, held: Held) -> None:
    """Enqueue every slot that no trial holds, waits for or used (idempotent: any number of callers)."""
    taken = {
        t.user_attrs.get(SLOT)
        for t in queue.get_trials(deepcopy=False)
        if t.state in (TrialState.WAITING, TrialState.RUNNING) or used(t)
    }
    for slot, params in slots(ctx, kind).items():
        if slot not in taken:
            held.check()
            queue.enqueue_trial(params, user_attrs={SLOT: slot}, skip_if_exists=False)


def retried(trial: FrozenTrial) -> bool:
    """Whether a waiting trial is a retry of one whose worker died or stopped (Optuna's retry callback names
    the failed trial): such work was already under way and is taken before anything else."""
    return "failed_trial" in trial.system_attrs


def _take(queue: optuna.Study, waiting: list[FrozenTrial]) -> optuna.Trial | None:
    """Optuna's own pop (`Study.ask`: mark a waiting trial RUNNING, atomically), in our order: the first of
    `waiting` no other worker took first."""
    queue._thread_local.cached_all_trials = None
    for t in waiting:
        try:
            if queue._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(queue, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def pop(
    ctx: StudyContext, kind: str, queue: optuna.Study, held: Held, only_retried: bool = False
) -> optuna.Trial | None:
    """The next waiting item of `queue`, now held by this worker (None: nothing waits): retried ones first,
    then in slot order; with `only_retried`, retried ones alone."""
    while True:
        fail_stale(queue, ctx.liveness, ctx.on_stale, may_judge_stale(ctx.cfg.study.lease_s))
        waiting = queue.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        waiting = sorted(
            (t for t in waiting if retried(t) or not only_retried), key=lambda t: (not retried(t), t.number)
        )
        if not waiting:
            return None
        held.check()
        trial = _take(queue, waiting)
        if trial is None:
            continue
        slot = trial.user_attrs.get(SLOT)
        rivals = [
            t
            for t in queue.get_trials(deepcopy=False)
            if t.number != trial.number
            and t.user_attrs.get(SLOT) == slot
            and (t.state == TrialState.RUNNING or used(t))
        ]
        if slot is None or rivals:
            trial.set_user_attr("surplus", True)
            queue.tell(trial, state=TrialState.FAIL)
            continue
        for key, value in ctx.me.items():
            trial.set_user_attr(key, value)
        if ctx.heartbeats:
            ctx.storage.record_heartbeat(trial._trial_id)
        return trial


def sample(ctx: StudyContext, queue: optuna.Study, trial: optuna.Trial, cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with the trial's parameters: fixed or retried ones as they are, new ones from TPE seeded by
    (tuning_seed, trial number)."""
    seed = int(np.random.SeedSequence([ctx.cfg.study.tuning_seed, trial.number]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        queue.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP)
    for key, space in sorted(ctx.cfg.study.search_space.items()):
        cfg = replace_path(cfg, key, trial.suggest_float(key, space.low, space.high, log=space.log))
    return cfg
