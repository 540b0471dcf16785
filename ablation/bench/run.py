"""`make bench`: every measure in turn, then bench.json and a readable table (reports/bench/)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ablation.bench.flops import step_rates
from ablation.bench.measures import (
    QUICK,
    evaluation_speedup,
    neighbour_index,
    padding_throughput,
    prefix_cache_speedup,
    refresh_share,
    step_overhead,
    study_wall_times,
)
from ablation.bench.precision import cpu_bf16_speedup
from ablation.bench.processes import peak_memory, worker_threads
from ablation.bench.table import readable_table
from ablation.config import load_config, replace_path
from ablation.data.corpus import read_split, resolve_corpus
from ablation.data.run_data import load_run_data
from ablation.io import REPO_ROOT, write_text_atomic
from ablation.runtime import describe_device

RECIPE = REPO_ROOT / "experiments" / "recipe.yaml"


def run_bench(corpus: str | None = None, out: str | None = None, quick: bool = False) -> dict:
    """Run every measure and write bench.json plus a readable table."""
    cfg = load_config(QUICK)
    data = load_run_data(cfg, corpus)
    full_test = read_split(resolve_corpus(corpus, cfg.data.corpus), "test")
    results = {"device": describe_device(torch.device("cpu")), "torch_threads": torch.get_num_threads(), "results": []}
    measures: list[Callable[[], dict]] = [
        lambda: step_overhead(replace_path(cfg, "model.sharing", "shared"), data, 6 if quick else 24),
        lambda: step_overhead(replace_path(cfg, "model.sharing", "unshared"), data, 6 if quick else 24),
        lambda: evaluation_speedup(cfg, data, full_test, 1 if quick else 5),
        lambda: refresh_share(cfg, data),
        lambda: prefix_cache_speedup(cfg, data, 1 if quick else 2),
        lambda: cpu_bf16_speedup(cfg, data, 6 if quick else 24, trial=not quick),
        lambda: neighbour_index(),
        lambda: worker_threads(corpus, steps=8 if quick else 24, rounds=1 if quick else 2),
        lambda: padding_throughput(
            cfg, data, full_test, (128, 256) if quick else (128, 256, 512), 96 if quick else 192
        ),
    ]
    recipe = replace_path(load_config(RECIPE, [f"train.max_train_queries={64 if quick else 256}"]), "study.sweep", {})
    measures.append(lambda: step_rates(recipe, load_run_data(recipe, corpus), 3 if quick else 8))
    if not quick:
        measures += [lambda: study_wall_times(corpus), lambda: peak_memory(corpus)]
    for measure in measures:
        r = measure()
        results["results"].append(r)
        print(json.dumps(r), flush=True)
    path = Path(out) if out else REPO_ROOT / "reports" / "bench" / "bench.json"
    write_text_atomic(json.dumps(results, indent=2), path)
    table = readable_table(results["results"])
    write_text_atomic(table + "\n", path.with_suffix(".md"))
    print(table)
    print(f"bench written: {path} and {path.with_suffix('.md')}")
    return results
