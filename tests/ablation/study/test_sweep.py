"""A sweep: its levels, and a smoke sweep of 2 levels killed in the middle of level 2, resumed, and reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablation.cli.main import main
from ablation.config import load_config
from ablation.errors import UserError
from ablation.study.sweep import changes_zero_shot, levels
from tests.conftest import FIXTURE, REPO, SMOKE, SmokeStudy


def test_levels_are_named_sub_studies_sharing_one_zero_shot_where_the_encoder_input_is_the_same() -> None:
    cfg = load_config(SMOKE, ["study.zero_shot=true", "study.sweep={model.freeze_layers: [2, 0]}"])
    found = levels(cfg, Path("/r"))
    assert [lv.name for lv in found] == ["smoke.freeze_layers-2", "smoke.freeze_layers-0"]
    assert [lv.cfg.model.freeze_layers for lv in found] == [2, 0]
    assert [lv.cfg.study.zero_shot for lv in found] == [True, False]  # depth does not change the input
    assert all(lv.cfg.study.sweep == {} and lv.cfg.study.parent == "smoke" for lv in found)
    assert {lv.cfg.tracking.experiment for lv in found} == {"smoke"}
    assert found[1].folder == Path("/r/smoke.freeze_layers-0") and found[1].label == "freeze_layers=0"
    two = load_config(SMOKE, ["study.zero_shot=true", "study.sweep={model.max_length: [48, 32], train.lr: [0.1, 0.2]}"])
    found = levels(two, Path("/r"))
    assert [lv.name for lv in found] == ["smoke.max_length-48.lr-0.1", "smoke.max_length-32.lr-0.2"]
    assert [lv.cfg.study.zero_shot for lv in found] == [True, True]  # the length changes what it sees
    assert changes_zero_shot("model.name") and changes_zero_shot("data.themes")
    assert not changes_zero_shot("model.freeze_layers") and not changes_zero_shot("negatives.random_rate")


def test_a_level_value_of_the_wrong_type_names_the_level() -> None:
    cfg = load_config(SMOKE, ["study.sweep={model.freeze_layers: [1, two]}"])
    with pytest.raises(UserError, match=r"level 2 \(freeze_layers-two\).*model.freeze_layers"):
        levels(cfg, Path("/r"))


def _cmd(corpus: Path, uri: str, run_dir: Path, sets: list[str]) -> list[str]:
    args = ["--config", str(SMOKE), "--corpus", str(corpus), "--tracking-uri", uri, "--run-dir", str(run_dir)]
    return [sys.executable, "-m", "ablation", "run", *args, *[a for s in sets for a in ("--set", s)]]


def _kill_in_level_2(cmd: list[str]) -> str:
    """Run the sweep and SIGKILL it right after level 2 finished its first run; returns its output."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen, in_level_2 = [], False
    assert proc.stdout is not None
    watchdog = threading.Timer(900, lambda: os.killpg(proc.pid, signal.SIGKILL))  # only ends a hung run
    watchdog.start()
    for line in proc.stdout:
        seen.append(line)
        in_level_2 = in_level_2 or "level 2 of 2" in line
        if in_level_2 and line.startswith("[progress] "):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    watchdog.cancel()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


@pytest.mark.slow
def test_a_sweep_of_two_levels_resumes_after_a_kill_in_level_2_and_reports_per_level(
    corpus: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [*FIXTURE, "study.n_trials=1", "study.seeds=[1, 2, 3]", "study.zero_shot=true", "train.epochs=1"]
    sets.append("study.sweep={model.freeze_layers: [1, 0]}")
    cmd = _cmd(corpus, uri, tmp_path / "run", sets)
    first = _kill_in_level_2([*cmd, "--no-report"])
    assert "level 1 of 2" in first and "study 'smoke.freeze_layers-1' done" not in first  # the summary comes last
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    before = client.search_runs([exp.experiment_id], max_results=1000)
    assert any(r.info.status == "RUNNING" for r in before)  # the kill left level 2 open
    level_1 = [r for r in before if r.data.tags.get("study") == "smoke.freeze_layers-1"]
    # resumed with 2 worker processes: the level is shared between them as any study is
    again = subprocess.run(
        [*cmd, "--no-report", "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep 'smoke' (2 levels) done" in again.stdout
    progress = [line for line in again.stderr.splitlines() if line.startswith("[progress] ")]
    # level 1 was complete: no work; level 2 had 1 of its 8 runs (2 arms x (1 trial + 3 seeds)) done
    assert len(progress) == 7 and all(" of 8 runs done" in line for line in progress), progress
    # two workers print in the order they get to it: the last line may be the one that counted 7 of 8
    assert any("8 of 8 runs done, 0 left" in line for line in progress), progress
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert {r.info.run_id for r in level_1} <= {r.info.run_id for r in runs}  # level 1 left as it was
    assert len([r for r in runs if r.data.tags.get("study") == "smoke.freeze_layers-1"]) == len(level_1)
    by_role: dict[str, list] = {}
    for r in runs:
        by_role.setdefault(r.data.tags["role"], []).append(r)
    assert all(r.info.status == "FINISHED" for r in runs if not r.data.tags["role"].startswith("superseded"))
    (sweep,) = by_role["sweep"]
    studies = {r.data.tags["study"]: r for r in by_role["study"]}
    assert set(studies) == {"smoke.freeze_layers-1", "smoke.freeze_layers-0"}
    for name, study in studies.items():
        level = "freeze_layers=" + name[-1]
        assert study.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert study.data.tags["level"] == level and study.data.params["study.level"] == level
        arms = [r for r in by_role["arm"] if r.data.tags["study"] == name]
        assert len(arms) == 2 and all(r.data.tags["mlflow.parentRunId"] == study.info.run_id for r in arms)
        finals = [r for r in by_role["final"] if r.data.tags["study"] == name]
        assert sorted(r.data.tags["seed"] for r in finals) == ["1", "1", "2", "2", "3", "3"]
        assert all(r.data.params["model.freeze_layers"] == name[-1] for r in finals)
        assert all(r.data.tags["level"] == level and r.data.params["study.level"] == level for r in finals)
        assert len([r for r in by_role["trial"] if r.data.tags["study"] == name]) == 2
    (zero,) = by_role["zero-shot"]  # one reference for both levels: depth does not change its input
    assert zero.data.tags["study"] == "smoke.freeze_layers-1"

    # the per-level reports and the sweep's own, with the interaction row
    assert main(["report", "--study", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    for name in studies:
        assert "zero-shot" in (out / name / "report.md").read_text()  # level 2 borrows level 1's reference
    text = (out / "report.md").read_text()
    assert (
        "Interaction of unshared − shared (effect at a level minus effect at the first)" in text
        and (out / "sweep.png").stat().st_size
    )
    table = pd.read_csv(out / "summary.csv")
    kinds = table.groupby("kind").size().to_dict()
    assert kinds == {"effect": 4, "interaction": 2, "zero-shot": 8, "mean": 12}
    sweep_family = table[table["family"] == "sweep"]
    assert len(sweep_family) == 6 and (sweep_family["p_adjusted"] >= sweep_family["p_value"]).all()
    inter = table[table["kind"] == "interaction"].set_index("slice")
    eff = table[table["kind"] == "effect"].set_index(["slice", "level"])["diff"]
    for slice_ in ("all", "unseen"):  # the difference of the per-level differences
        expected = eff[(slice_, "freeze_layers=0")] - eff[(slice_, "freeze_layers=1")]
        assert inter.loc[slice_, "diff"] == pytest.approx(expected, abs=1e-12)

    # the same sweep with other levels is refused before anything is written
    changed = [*sets[:-1], "study.sweep={model.freeze_layers: [1, 2]}"]
    refused = subprocess.run(
        [*_cmd(corpus, uri, tmp_path / "run", changed), "--no-report"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "study 'smoke' was started" in refused.stderr, refused.stderr[-2000:]
    assert len(client.search_runs([exp.experiment_id], max_results=1000)) == len(runs)


@pytest.mark.slow
def test_a_smoke_sweep_over_the_loss_trains_each_level_with_its_own_similarity(corpus: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [*FIXTURE, "study.n_trials=1", "study.seeds=[1, 2, 3]", "study.zero_shot=true", "train.epochs=1"]
    sets += ["study.arms=[shared, unshared, shared_projection]", "study.sweep={train.loss: [triplet, contrastive]}"]
    args = ["run", "--config", str(SMOKE), "--corpus", str(corpus), "--tracking-uri", uri]
    args += ["--run-dir", str(tmp_path / "run"), "--no-report"]
    assert main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    assert main(["report", "--study", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    finals = [r for r in runs if r.data.tags["role"] == "final"]
    assert len(finals) == 2 * 3 * 3 and all(r.info.status == "FINISHED" for r in finals)
    for r in finals:
        loss = r.data.params["train.loss"]
        assert r.data.tags["study"] == f"smoke.loss-{loss}" and r.data.tags["level"] == f"loss={loss}"
        assert r.data.tags["similarity"] == {"triplet": "l2", "contrastive": "cosine"}[loss]
        assert (f"loss/{loss}" in r.data.metrics) and ("neg/inbatch_copies_masked" in r.data.metrics) == (
            loss == "contrastive"
        )
    assert len([r for r in runs if r.data.tags["role"] == "zero-shot"]) == 1  # the loss does not change its input
    text = (tmp_path / "report" / "report.md").read_text()
    verdict = text.split("## Verdict", 1)[1].split("##", 1)[0]
    assert "the untrained encoder on the" in verdict.split(". ", 1)[0]  # the first sentence answers it
    for arm in ("unshared", "shared_projection"):
        assert f"Interaction of {arm} − shared (effect at a level minus effect at the first)" in verdict
    assert "## Against the published results" in text and "Wachsmuth et al. 2018" in text
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert table[table["kind"] == "interaction"].groupby("arm").size().to_dict() == {
        "shared_projection": 2,
        "unshared": 2,
    }
    # a name names one thing: a plain study given the sweep's name is refused before it writes
    before = len(runs)
    plain = ["run", "--config", str(SMOKE), "--corpus", str(corpus), "--tracking-uri", uri, "--no-report"]
    assert main([*plain, "--run-dir", str(tmp_path / "run"), *[a for s in sets[:-1] for a in ("--set", s)]]) == 2
    assert len(client.search_runs([exp.experiment_id], max_results=1000)) == before


def test_a_sweep_given_a_plain_studys_name_is_refused(
    smoke_study: SmokeStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--config", str(SMOKE), "--corpus", str(smoke_study.corpus), "--tracking-uri", uri]
    args += [
        "--run-dir",
        str(tmp_path / "run"),
        "--no-report",
        "--set",
        "study.sweep={train.loss: [triplet, contrastive]}",
    ]
    assert main([*args, *[a for s in FIXTURE for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: study.name 'smoke' is already a plain study in {uri}; give this one another study.name"
    assert not (tmp_path / "run").exists()
