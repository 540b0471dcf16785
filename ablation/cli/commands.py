"""One function per subcommand: each takes the parsed arguments and calls the layer that does the work
(imported inside it, so that `ablation --help` loads no torch). Returns the exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ablation.errors import UserError


def data_stats(args: argparse.Namespace) -> int:
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


def evaluate(args: argparse.Namespace) -> int:
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


def train(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
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


def report(args: argparse.Namespace) -> int:
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


def bench(args: argparse.Namespace) -> int:
    from ablation.bench.run import run_bench

    run_bench(corpus=args.corpus, out=args.out, quick=args.quick)
    return 0


def gpu_check(args: argparse.Namespace) -> int:
    from ablation.bench.gpu_check import gpu_check

    results = gpu_check(corpus=args.corpus, device=args.device, precision=args.precision, out=args.out)
    return 0 if all(r.get("met", True) for r in results["results"] if r["id"] in ("tests", "repeat")) else 1


def services(args: argparse.Namespace) -> int:
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


def dashboard(args: argparse.Namespace) -> int:

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


def ui(args: argparse.Namespace) -> int:
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
