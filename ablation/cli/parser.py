"""The arguments of every subcommand: argparse with one `error:` line for bad arguments (exit code 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from ablation.cli import commands
from ablation.errors import UserError

DESCRIPTION = "Command line: parses arguments, then calls one function per subcommand. No work happens here."


class _Parser(argparse.ArgumentParser):
    """argparse with one `error:` line (no usage block) for bad arguments, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(UserError.exit_code)


def _workers(text: str) -> int | str:
    """An argparse type: `auto` or an integer of at least 1."""
    return text if text == "auto" else _positive(text)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common_corpus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="corpus folder or .zip (default: ARGUANA_DIR, else data/arguana-counterargs)")


def _common_tracking(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else config, else sqlite:///mlflow.db)",
    )


def _data_commands(sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Reading the corpus and evaluating encoders: data-stats and evaluate."""
    p = sub.add_parser("data-stats", help="per-task query/candidate/pair statistics of a split")
    _common_corpus(p)
    p.add_argument("--split", default="test")
    p.add_argument("--themes", nargs="*", help="only these themes")
    p.add_argument("--format", choices=["table", "json"], default="table")
    handlers["data-stats"] = commands.data_stats

    p = sub.add_parser("evaluate", help="zero-shot retrieval metrics of a pretrained encoder on all 8 tasks")
    _common_corpus(p)
    p.add_argument("--split", default="test")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="HF id or local path")
    p.add_argument("--zero-shot", action="store_true", help="mean pooling, L2-normalised, cosine ranking")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--per-query-csv", help="write per-query ranks to this CSV")
    p.add_argument("--format", choices=["table", "json"], default="table")
    handlers["evaluate"] = commands.evaluate


def _study_commands(sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Training and studies: train and run."""
    p = sub.add_parser("train", help="train and evaluate one arm under one seed, tracked in MLflow")
    _common_corpus(p)
    _common_tracking(p)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--arm", help="sharing arm (overrides model.sharing)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. train.lr=1e-5")
    handlers["train"] = commands.train

    p = sub.add_parser("run", help="the ablation study: tune per arm with Optuna, final seeds, report")
    _common_corpus(p)
    _common_tracking(p)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--run-dir", help="working files (Optuna journal, logs); default runs/<study>")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes on the same studies; auto: as many as train.threads fit in the cores (CPU), 1 (GPU)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    handlers["run"] = commands.run


def _tool_commands(sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """What a researcher looks with: report, bench, gpu-check, dashboard, ui and services."""
    p = sub.add_parser("report", help="build the comparison report of a study from MLflow")
    _common_tracking(p)
    p.add_argument("--study", required=True)
    p.add_argument("--out", help="output folder (default reports/<study>)")
    handlers["report"] = commands.report

    p = sub.add_parser("bench", help="speed and memory benchmark (writes reports/bench/bench.json)")
    _common_corpus(p)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="fewer repeats and no study timings")
    handlers["bench"] = commands.bench

    p = sub.add_parser("gpu-check", help="the CUDA path in one table: device tests, P1 and P7 in bf16, a repeat")
    _common_corpus(p)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu, to try the check itself)")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--out", default=None, help="JSON path (default reports/gpu-check/gpu-check.json)")
    handlers["gpu-check"] = commands.gpu_check

    p = sub.add_parser("dashboard", help="optuna-dashboard over a study's storage (journal file or database)")
    p.add_argument("--config", required=True, help="the study's experiment YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. study.storage=...")
    p.add_argument("--run-dir", help="the study's run folder (default runs/<study>)")
    p.add_argument("--port", type=_positive, default=8080)
    p.add_argument("--level", type=_positive, default=1, help="a sweep's level whose queues to show (default 1)")
    handlers["dashboard"] = commands.dashboard

    p = sub.add_parser("ui", help="mlflow ui over the store, printing the link that opens a study's comparison")
    _common_tracking(p)
    p.add_argument("--study", default="quick", help="the study the link opens (default quick)")
    p.add_argument("--port", type=_positive, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the link and exit")
    handlers["ui"] = commands.ui

    p = sub.add_parser("services", help="a local PostgreSQL and mlflow server for the team setup (Ctrl-C stops)")
    p.add_argument("--dir", default=".services", help="where the cluster, artifacts and logs live")
    p.add_argument("--port", type=int, default=5000, help="mlflow server port on 127.0.0.1")
    p.add_argument("--pg-port", type=int, default=55432, help="PostgreSQL port on 127.0.0.1")
    handlers["services"] = commands.services


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="ablation", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}
    for add in (_data_commands, _study_commands, _tool_commands):
        add(sub, handlers)
    parser.set_defaults(_commands=handlers)
    return parser
