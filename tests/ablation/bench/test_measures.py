"""The benchmark's reference implementations agree with the harness (on the fixture corpus, tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablation.bench.measures import evaluation_speedup, neighbour_index, step_overhead
from ablation.bench.table import GOALS, readable_table
from ablation.data.run_data import load_run_data
from tests.conftest import smoke_config


def test_old_per_pair_evaluator_gives_the_same_accuracy(corpus: Path) -> None:
    cfg = smoke_config()
    data = load_run_data(cfg, str(corpus))
    result = evaluation_speedup(cfg, data, data.test.split, repeats=2)
    assert result["same_acc_at_1"] is True
    assert result["speedup"] > 0 and len(result["round_speedups"]) == 2  # speed itself lives in make bench
    table = readable_table([result, neighbour_index(n=100, dim=8)])
    assert table.count("\n") == 3 and "| P2 |" in table and "same acc@1: True" in table


def test_neighbour_index_timing_names_the_faster_one() -> None:
    result = neighbour_index(n=300, dim=16)
    assert result["faster"] in ("balltree", "brute")
    assert result["balltree_s"] > 0 and result["brute_s"] > 0


def test_step_overhead_runs_as_many_steps_as_asked_across_epochs(corpus: Path) -> None:
    cfg = smoke_config()
    data = load_run_data(cfg, str(corpus))
    per_epoch = -(-data.train.split.n // cfg.train.batch_size)
    result = step_overhead(cfg, data, steps=per_epoch + 2)
    assert result["steps"] == per_epoch + 2
    assert result["harness_step_s"] > 0 and result["bare_step_s"] > 0 and result["ratio"] > 0


def test_every_measure_names_a_defined_goal(corpus: Path) -> None:
    import inspect

    from ablation.bench import gpu_check, measures, precision, processes

    source = "".join(inspect.getsource(m) for m in (measures, processes, gpu_check, precision))
    ids = {part.split('"')[0] for part in source.split('"id": "')[1:]}
    assert ids and ids <= set(GOALS), ids - set(GOALS)


def test_the_bf16_row_compares_both_precisions_on_the_same_steps_or_says_why_not(corpus: Path) -> None:
    from ablation.bench.precision import cpu_bf16_speedup
    from ablation.runtime import cpu_bf16_flags

    cfg = smoke_config()
    result = cpu_bf16_speedup(cfg, load_run_data(cfg, str(corpus)), steps=3, trial=True)
    table = readable_table([result])
    if not cpu_bf16_flags():
        assert "skipped" in result and "neither AVX-512 BF16 nor AMX" in table
        return
    assert result["steps"] == 3 and result["fp32_step_s"] > 0 and result["bf16_step_s"] > 0
    assert result["ratio"] > 0 and result["met"] == (result["ratio"] >= 1.6)
    diff = result["val_acc_bf16"] - result["val_acc_fp32"]
    assert 0 <= result["val_acc_fp32"] <= 1 and result["val_acc_diff"] == diff
    assert "| P8 |" in table and "fp32 vs" in table


@pytest.mark.slow
def test_gpu_check_runs_a_sweep_level_as_its_sub_study_and_times_its_step(corpus: Path) -> None:
    from ablation.bench.gpu_check import sweep_level
    from tests.conftest import FIXTURE, SMOKE

    sets = [*FIXTURE, "train.epochs=1", "study.n_trials=1", "study.sweep={model.freeze_layers: [1, 0]}"]
    row = sweep_level(SMOKE, sets, str(corpus))
    assert row["id"] == "sweep-level" and row["level"] == "freeze_layers=0" and row["runs"] == 4
    assert row["level_s"] > 0 and row["step_s"] > 0 and row["batch_size"] == 8
