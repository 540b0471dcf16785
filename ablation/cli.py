"""Command line: parses arguments, then calls one function per subcommand. No work happens here."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from ablation.config import one_line
from ablation.errors import RedactingStream, UserError


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


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from ablation.data.corpus import read_split, resolve_corpus
    from ablation.data.slices import query_slices, training_texts
    from ablation.data.tasks import task_stats

    path = resolve_corpus(args.corpus)
    split = read_split(path, args.split, themes=args.themes or ())
    table = task_stats(split)
    slices = query_slices(split, training_texts(path) if args.split != "training" else None)
    for name, masks in slices.items():
        table.insert(len(table.columns) - 1, f"{name}_queries", [int(masks[t].sum()) for t in table["task"]])
    if args.format == "json":
        print(
            json.dumps(
                {
                    "split": split.name,
                    "pairs": split.n,
                    "dropped_points": split.dropped_points,
                    "dropped_counters": split.dropped_counters,
                    "digest": split.digest,
                    "tasks": table.drop(columns="description").to_dict(orient="records"),
                },
                indent=2,
            )
        )
    else:
        print(
            f"split {split.name}: {split.n} point/counter pairs "
            f"({split.dropped_points} points and {split.dropped_counters} counters without a partner dropped)"
        )
        print(
            table.to_string(
                index=False,
                float_format=lambda v: f"{v:,.2f}",
                formatters={c: "{:,}".format for c in table.columns if table[c].dtype.kind == "i"},
            )
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ablation.config import ModelConfig
    from ablation.data.corpus import read_split, resolve_corpus
    from ablation.data.run_data import tokenized_split
    from ablation.data.slices import training_texts
    from ablation.evaluation.ranking import metrics_table
    from ablation.evaluation.zeroshot import ZeroShot
    from ablation.io import write_csv_atomic
    from ablation.runtime import resolve_device

    if not args.zero_shot:
        raise UserError("evaluate: only --zero-shot is supported here; trained arms are evaluated by `ablation train`")
    path = resolve_corpus(args.corpus)
    split = read_split(path, args.split)
    model_cfg = ModelConfig(name=args.model, max_length=args.max_length, pooling="mean")
    model = ZeroShot(model_cfg, args.batch_size, resolve_device(args.device))
    seen = training_texts(path) if args.split != "training" else None
    result = model.evaluate(tokenized_split(split, model.tokenizer, args.max_length, seen))
    if args.per_query_csv:
        write_csv_atomic(result.per_query, args.per_query_csv)
    if args.format == "json":
        print(
            json.dumps(
                {"split": split.name, "model": args.model, "queries": split.n, "metrics": result.metrics}, indent=2
            )
        )
    else:
        print(metrics_table(result.metrics).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ablation.config import load_config
    from ablation.study.tracked_run import train_and_track

    overrides = list(args.set or [])
    if args.arm:
        overrides.append(f"model.sharing={args.arm}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(args.config, overrides)
    result = train_and_track(cfg, corpus=args.corpus, tracking_uri=args.tracking_uri)
    print(
        json.dumps(
            {"run_id": result.run_id, "test": {k: v for k, v in result.test_metrics.items() if "acc_at_1" in k}},
            indent=2,
        )
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ablation.config import load_config
    from ablation.report.sweep import build_study_or_sweep
    from ablation.runtime import INTERRUPTS
    from ablation.study.runner import StudyIncomplete, run_study, workers_for
    from ablation.study.sweep_run import run_sweep
    from ablation.tracking.store import resolve_tracking_uri

    cfg = load_config(args.config, args.set or [])
    INTERRUPTS.install()  # SIGINT, SIGTERM and SIGHUP end the open runs KILLED
    code = 0
    run = run_sweep if cfg.study.sweep else run_study
    workers = workers_for(cfg, os.cpu_count() or 1) if args.workers == "auto" else args.workers
    try:
        print(run(cfg, corpus=args.corpus, tracking_uri=args.tracking_uri, run_dir=args.run_dir, workers=workers))
    except StudyIncomplete as exc:  # not bad input: the work stopped short; the report says what is missing
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    if not args.no_report:
        uri = resolve_tracking_uri(args.tracking_uri, cfg.tracking.uri)
        paths = build_study_or_sweep(cfg.study.name, uri, experiment=cfg.tracking.experiment or cfg.study.name)
        print(f"report: {paths.html}")
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    from ablation.config import check_name
    from ablation.report.sweep import build_study_or_sweep
    from ablation.tracking import sqlite_store
    from ablation.tracking.store import resolve_tracking_uri

    check_name(args.study, "report: --study")
    uri = resolve_tracking_uri(args.tracking_uri)
    absent = sqlite_store.missing(uri)
    if absent:
        raise UserError(f"report: no MLflow store at {absent} (run the study first)")

    paths = build_study_or_sweep(args.study, uri, out_dir=args.out)
    print(f"report written: {paths.html}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ablation.bench.run import run_bench

    run_bench(corpus=args.corpus, out=args.out, quick=args.quick)
    return 0


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from ablation.bench.gpu_check import gpu_check

    results = gpu_check(corpus=args.corpus, device=args.device, precision=args.precision, out=args.out)
    return 0 if all(r.get("met", True) for r in results["results"] if r["id"] in ("tests", "repeat")) else 1


def _cmd_services(args: argparse.Namespace) -> int:
    import signal

    from ablation.tracking.services import CREDENTIALS, PGPASS, start_services

    folder = Path(args.dir).resolve()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"services: {folder} is a file, not a folder")
    pg, server = start_services(folder, args.pg_port, args.port)
    try:
        storage = pg.url("optuna")
        print(f"PostgreSQL: {storage} (Optuna storage and the study lock; password in {folder / PGPASS})")
        print(f"MLflow:     {server.url} (tracking server with basic auth; credentials in {folder / CREDENTIALS})")
        print("Both listen on 127.0.0.1 only and let in only who has those two files (mode 0600).")
        print(f"here:       make ablation ARGS='--tracking-uri {server.url} --set study.storage={storage}'")
        print(
            f"elsewhere:  copy {PGPASS} and {CREDENTIALS} into that machine's .services/ (scp -p; keep them 0600), "
            f"open a tunnel (ssh -N -L {args.pg_port}:127.0.0.1:{args.pg_port} -L {args.port}:127.0.0.1:{args.port} "
            "<this host>), then the same make command"
        )
        print("Ctrl-C stops both (the data stays in the folder for the next start)", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
        pg.stop()
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:

    from ablation.config import load_config
    from ablation.io import REPO_ROOT
    from ablation.study.preflight import check_storage
    from ablation.study.storage import JOURNAL

    cfg = load_config(args.config, args.set or [])
    storage = cfg.study.storage
    folder = Path(args.run_dir) if args.run_dir else REPO_ROOT / "runs" / cfg.study.name
    if cfg.study.sweep:  # each level has its own queues: show the one asked for
        from ablation.study.sweep import levels

        found = levels(cfg, folder)
        if not 1 <= args.level <= len(found):
            raise UserError(f"dashboard: --level {args.level}: the sweep has levels 1 to {len(found)}")
        folder = found[args.level - 1].folder
    if storage is None:
        journal = folder / JOURNAL
        if not journal.is_file():
            raise UserError(f"dashboard: no Optuna journal at {journal} (run the study first, or set study.storage)")
        storage = str(journal)
    else:
        check_storage(storage)
    from optuna_dashboard import run_server

    print(f"optuna-dashboard: http://127.0.0.1:{args.port} over {storage} (Ctrl-C stops)", flush=True)
    run_server(storage, host="127.0.0.1", port=args.port)
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from ablation.config import check_name
    from ablation.tracking.store import resolve_tracking_uri
    from ablation.tracking.view import studies, study_link

    check_name(args.study, "ui: --study")
    uri = resolve_tracking_uri(args.tracking_uri)
    link = study_link(uri, args.study, f"http://127.0.0.1:{args.port}")
    if link is None:
        known = studies(uri)
        raise UserError(
            f"ui: no study {args.study!r} at {uri}"
            + (f" (studies there: {', '.join(known)}; make ui STUDY=<name>)" if known else " (it holds no study yet)")
        )
    print(f"open {link}", flush=True)
    if "viewStateShareKey" in link:
        print(
            f"(study {args.study}: its arms side by side with the zero-shot reference; the chart tab holds the charts)"
        )
    if args.print_only:
        return 0
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--host", "127.0.0.1", "--port", str(args.port)]
    # the store's URL by the environment, not the command line, where `ps` shows it to every user
    return subprocess.call(command, env={**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


def _data_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Reading the corpus and evaluating encoders: data-stats and evaluate."""
    p = sub.add_parser("data-stats", help="per-task query/candidate/pair statistics of a split")
    _common_corpus(p)
    p.add_argument("--split", default="test")
    p.add_argument("--themes", nargs="*", help="only these themes")
    p.add_argument("--format", choices=["table", "json"], default="table")
    commands["data-stats"] = _cmd_data_stats

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
    commands["evaluate"] = _cmd_evaluate


def _study_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Training and studies: train and run."""
    p = sub.add_parser("train", help="train and evaluate one arm under one seed, tracked in MLflow")
    _common_corpus(p)
    _common_tracking(p)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--arm", help="sharing arm (overrides model.sharing)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. train.lr=1e-5")
    commands["train"] = _cmd_train

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
    commands["run"] = _cmd_run


def _tool_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """What a researcher looks with: report, bench, gpu-check, dashboard, ui and services."""
    p = sub.add_parser("report", help="build the comparison report of a study from MLflow")
    _common_tracking(p)
    p.add_argument("--study", required=True)
    p.add_argument("--out", help="output folder (default reports/<study>)")
    commands["report"] = _cmd_report

    p = sub.add_parser("bench", help="speed and memory benchmark (writes reports/bench/bench.json)")
    _common_corpus(p)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="fewer repeats and no study timings")
    commands["bench"] = _cmd_bench

    p = sub.add_parser("gpu-check", help="the CUDA path in one table: device tests, P1 and P7 in bf16, a repeat")
    _common_corpus(p)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu, to try the check itself)")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--out", default=None, help="JSON path (default reports/gpu-check/gpu-check.json)")
    commands["gpu-check"] = _cmd_gpu_check

    p = sub.add_parser("dashboard", help="optuna-dashboard over a study's storage (journal file or database)")
    p.add_argument("--config", required=True, help="the study's experiment YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. study.storage=...")
    p.add_argument("--run-dir", help="the study's run folder (default runs/<study>)")
    p.add_argument("--port", type=_positive, default=8080)
    p.add_argument("--level", type=_positive, default=1, help="a sweep's level whose queues to show (default 1)")
    commands["dashboard"] = _cmd_dashboard

    p = sub.add_parser("ui", help="mlflow ui over the store, printing the link that opens a study's comparison")
    _common_tracking(p)
    p.add_argument("--study", default="quick", help="the study the link opens (default quick)")
    p.add_argument("--port", type=_positive, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the link and exit")
    commands["ui"] = _cmd_ui

    p = sub.add_parser("services", help="a local PostgreSQL and mlflow server for the team setup (Ctrl-C stops)")
    p.add_argument("--dir", default=".services", help="where the cluster, artifacts and logs live")
    p.add_argument("--port", type=int, default=5000, help="mlflow server port on 127.0.0.1")
    p.add_argument("--pg-port", type=int, default=55432, help="PostgreSQL port on 127.0.0.1")
    commands["services"] = _cmd_services


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="ablation", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}
    for add in (_data_commands, _study_commands, _tool_commands):
        add(sub, commands)
    parser.set_defaults(_commands=commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: bad input → one `error:` line on stderr and exit code 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (RedactingStream(s) for s in streams)  # no password is ever printed
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
    from ablation.io import REPO_ROOT
    from ablation.tracking.services import SERVICES_ENV, use_credentials

    use_credentials(Path(os.environ.get(SERVICES_ENV) or REPO_ROOT / ".services"))  # `make services` files
    from ablation.io import git_commit

    git_commit()  # the commit of the code this process imported, before the tree can change
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one `error:` line printed)
        return int(exc.code or 0)
    try:
        return args._commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except ValidationError as exc:  # a config section built from arguments
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        from ablation.runtime import INTERRUPTS

        print("interrupted", file=sys.stderr)
        return INTERRUPTS.exit_code
    except Exception as exc:  # not bad input: a bug or a broken service; its runs were ended FAILED
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first[:300]} (run with --debug for the traceback)", file=sys.stderr)
        return 1
