"""The CLI: JSON output, readable tables, and exit code 2 with one error line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ablation.cli.main import main
from ablation.tracking.store import Tracker
from tests.conftest import SMOKE, SmokeStudy


def test_data_stats_json(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data-stats", "--corpus", str(corpus), "--split", "test", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 30 and out["dropped_points"] == 3
    tasks = {t["task"]: t for t in out["tasks"]}
    assert list(tasks) == ["sdoc", "sdc", "sdoa", "sda", "stc", "sta", "epc", "epa"]
    # 6 test pairs repeat the training split; 14 points are listed twice (12 cross-listed, 2 in the repeated pair)
    assert {t["unseen_queries"] for t in tasks.values()} == {24}
    assert [tasks[t]["self_copy_queries"] for t in ("sdoc", "sda", "epc", "epa")] == [0, 2, 0, 14]
    # epc: 29 other counters, less the copy of the true counter that 14 queries have
    assert tasks["epc"]["false_pairs"] == 30 * 29 - 14
    assert main(["data-stats", "--corpus", str(corpus), "--split", "test"]) == 0
    text = capsys.readouterr().out
    assert "sdoc" in text and "unseen_queries" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data-stats", "--corpus", "/no/such/corpus"], "no such file or directory"),
        (["data-stats", "--split", "dev"], "no such split"),
        (["evaluate", "--split", "test"], "only --zero-shot"),
        (["train", "--config", "/no/such.yaml"], "no such file"),
        (["evaluate", "--zero-shot", "--max-length", "4"], "max_length: 4 is below the minimum 8"),
    ],
)
def test_bad_input_exit_2_one_line(
    corpus: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--corpus" not in args:
        args = [*args, "--corpus", str(corpus)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_python_dash_m_and_console_script(corpus: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ablation", "data-stats", "--corpus", str(corpus / "nope")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: corpus:")
    script = Path(sys.executable).parent / "ablation"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "data-stats" in proc.stdout


def test_report_of_an_unknown_study_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input to `run` is covered case by case in tests/ablation/study/test_preflight.py."""
    store = tmp_path / "other.db"
    assert main(["report", "--study", "nope", "--tracking-uri", f"sqlite:///{store}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: report: no MLflow store at {store} (run the study first)"]
    assert not store.exists()  # a report reads a store, it never creates one
    Tracker(f"sqlite:///{store}").experiment_id("other")
    assert main(["report", "--study", "nope", "--tracking-uri", f"sqlite:///{store}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no study named 'nope'" in errors[0]


def test_make_help_lists_every_target() -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["make", "-s", "help"], cwd=repo, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    phony = next(line for line in (repo / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    for target in phony.split(":", 1)[1].split():
        assert target in out, target


@pytest.mark.slow
def test_dashboard_serves_the_tuning_of_a_study(smoke_study: SmokeStudy) -> None:
    import time
    import urllib.request

    from ablation.tracking.services import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "ablation", "dashboard", "--config", str(SMOKE), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--run-dir", str(smoke_study.root / "run")], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as answer:
                    studies = json.loads(answer.read())["study_summaries"]
                tuning = next(s for s in studies if s["study_name"] == "smoke-shared")
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{tuning['study_id']}") as answer:
                    detail = json.loads(answer.read())
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "optuna-dashboard did not start"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # each arm's tuning and its final seeds (a queue whose trial values are the finals' validation objective)
    names = {"smoke-shared", "smoke-unshared", "smoke-shared-final", "smoke-unshared-final"}
    assert {s["study_name"] for s in studies} == names
    assert detail.get("objective_names") == ["val/retrieval/acc_at_1/mean"], list(
        detail
    )  # the axis names the objective


def test_dashboard_without_a_journal_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--config", str(SMOKE), "--run-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dashboard: no Optuna journal") and "\n" not in err


def test_dashboard_of_a_sweep_shows_the_queues_of_the_level_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = ["--config", str(SMOKE), "--set", "study.sweep={model.freeze_layers: [1, 0]}", "--run-dir", str(tmp_path)]
    assert main(["dashboard", *sweep, "--level", "2"]) == 2
    assert f"no Optuna journal at {tmp_path}/smoke.freeze_layers-0/optuna.journal" in capsys.readouterr().err
    assert main(["dashboard", *sweep, "--level", "3"]) == 2
    assert "--level 3: the sweep has levels 1 to 2" in capsys.readouterr().err


def test_train_and_ui_check_before_they_create_a_store(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], smoke_study: SmokeStudy
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "--config", str(SMOKE), "--corpus", str(corpus), "--tracking-uri", uri]
    assert main([*args, "--set", "train.precision=fp16", "--set", "train.device=cpu"]) == 2
    assert main(["ui", "--tracking-uri", uri, "--study", "no-such", "--print-only"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error:") for e in errors), errors
    assert "fp16" in errors[0] and "no study 'no-such'" in errors[1] and "holds no study yet" in errors[1]
    assert not (tmp_path / "mlflow.db").exists()  # neither created the store
    assert main(["ui", "--tracking-uri", smoke_study.uri, "--study", "no-such", "--print-only"]) == 2
    assert "(studies there: smoke; make ui STUDY=<name>)" in capsys.readouterr().err
