"""Typed, frozen experiment configuration, validated when loaded from YAML.

Every setting has a default here; an experiment YAML overrides only what differs. Unknown keys, wrong
types and out-of-range values raise :class:`UserError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ablation.errors import UserError
from ablation.typed_yaml import build, dump_yaml, flatten, merge, parse_override, to_dict

__all__ = ["ExperimentConfig", "TASKS", "dump_yaml", "flatten", "from_dict", "load_config", "replace_path", "to_dict"]

TASKS: tuple[str, ...] = ("sdoc", "sdc", "sdoa", "sda", "stc", "sta", "epc", "epa")


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


@dataclass(frozen=True)
class DataConfig:
    """Which part of the corpus a run uses."""

    corpus: str | None = None  # directory or .zip; None: --corpus, else ARGUANA_DIR, else data/
    themes: tuple[str, ...] = ()  # subset by whole themes; empty: all
    max_debates_per_theme: int | None = field(default=None, metadata=_range(1))


@dataclass(frozen=True)
class TinyBertConfig:
    """A randomly initialised BERT, for tests and smoke runs (no download)."""

    hidden_size: int = field(default=32, metadata=_range(8))
    num_hidden_layers: int = field(default=2, metadata=_range(1))
    num_attention_heads: int = field(default=2, metadata=_range(1))
    intermediate_size: int = field(default=64, metadata=_range(8))


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and its heads; `sharing` picks the ablation arm."""

    name: str = "all-MiniLM-L6-v2"  # HF id, local path, or "tiny-random"
    sharing: str = "shared"
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    max_length: int = field(default=128, metadata=_range(8, 512))
    proj_dim: int = field(default=128, metadata=_range(1))
    freeze_embeddings: bool = False
    freeze_layers: int = field(default=0, metadata=_range(0))  # bottom transformer layers to freeze
    head_init: Literal["pca", "random"] = "pca"  # pca: top principal components of the pooled training texts
    tiny: TinyBertConfig = TinyBertConfig()


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run."""

    epochs: int = field(default=3, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=3e-6, metadata=_range(0.0))
    head_lr: float | None = field(default=None, metadata=_range(0.0))  # heads + classifier; None: lr
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    warmup_steps: int = field(default=0, metadata=_range(0))
    grad_clip: float | None = field(default=None, metadata=_range(0.0))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast; applies on CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_train_queries: int | None = field(default=None, metadata=_range(1))
    grad_cosine_every: int = field(default=10, metadata=_range(0))  # 0: never
    bucket_size: int = field(default=50, metadata=_range(1))  # batches per length bucket


@dataclass(frozen=True)
class NegativesConfig:
    """Hard-negative mining with a scheduled share of random negatives: the rate goes linearly from
    `random_rate` at the first step to `random_rate_final` at the last (None: constant)."""

    random_rate: float = field(default=0.8, metadata=_range(0.0, 1.0))
    random_rate_final: float | None = field(default=None, metadata=_range(0.0, 1.0))
    reuse_train_embeddings: bool = False
    index: Literal["auto", "balltree", "brute"] = "auto"


@dataclass(frozen=True)
class EvalConfig:
    """What validation and test evaluation compute."""

    ks: tuple[int, ...] = (1, 5, 10)
    rerank_k: int = field(default=10, metadata=_range(1))
    val_tasks: tuple[str, ...] = TASKS
    batch_size: int = field(default=64, metadata=_range(1))
    max_val_queries: int | None = field(default=None, metadata=_range(1))


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow writes; --tracking-uri and MLFLOW_TRACKING_URI take precedence."""

    uri: str | None = None
    experiment: str | None = None  # default: the study name


@dataclass(frozen=True)
class SearchParam:
    """One tuned hyperparameter: a float range, sampled by TPE."""

    low: float = 0.0
    high: float = 1.0
    log: bool = False


@dataclass(frozen=True)
class StudyConfig:
    """The ablation study: arms, tuning budget, seeds and objective."""

    name: str = "study"
    arms: tuple[str, ...] = ("shared", "unshared")
    n_trials: int = field(default=4, metadata=_range(0))
    seeds: tuple[int, ...] = (1, 2, 3)
    tuning_seed: int = field(default=0, metadata=_range(0))  # trials train under it, and TPE samples with it
    objective: str = "val/retrieval/acc_at_1/mean"  # the bi-encoder itself; the reranker is reported beside it
    direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal["median", "none"] = "median"
    pruner_warmup_epochs: int = field(default=1, metadata=_range(0))
    pruner_startup_trials: int = field(default=2, metadata=_range(0))
    search_space: dict[str, SearchParam] = field(
        default_factory=lambda: {
            "negatives.random_rate": SearchParam(0.0, 1.0),
            "negatives.random_rate_final": SearchParam(0.0, 1.0),
        }
    )
    storage: str | None = None  # Optuna storage URL; default: JournalStorage file in the run dir
    zero_shot: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one experiment YAML describes."""

    seed: int = 1
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    negatives: NegativesConfig = NegativesConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    study: StudyConfig = StudyConfig()

    def __post_init__(self) -> None:
        from models.arms import ARMS  # local: models imports torch, config must stay light

        for arm in (self.model.sharing, *self.study.arms):
            if arm not in ARMS:
                raise UserError(f"config: unknown arm {arm!r} (known: {', '.join(sorted(ARMS))})")
        if not self.study.arms or len(set(self.study.arms)) != len(self.study.arms):
            raise UserError("config: study.arms must list at least one arm, each once")
        if not self.study.seeds:
            raise UserError("config: study.seeds must list at least one seed")
        for task in self.eval.val_tasks:
            if task not in TASKS:
                raise UserError(f"config: eval.val_tasks: unknown task {task!r} (known: {', '.join(TASKS)})")
        if not self.eval.ks or min(self.eval.ks) < 1:
            raise UserError("config: eval.ks must be a non-empty list of positive integers")
        if self.model.tiny.hidden_size % self.model.tiny.num_attention_heads:
            raise UserError("config: model.tiny.hidden_size must be divisible by num_attention_heads")
        for key, space in self.study.search_space.items():
            if space.low > space.high:
                raise UserError(f"config: study.search_space.{key}: low > high")
            _get_path(self, key)  # must name an existing setting


def _get_path(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            raise UserError(f"config: {dotted!r} does not name a setting")
        obj = getattr(obj, part)
    return obj


def from_dict(values: dict[str, Any]) -> ExperimentConfig:
    """Validate a (possibly partial) mapping and fill in defaults."""
    if not isinstance(values, dict):
        raise UserError("config: the top level must be a mapping")
    return build(ExperimentConfig, values)


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load an experiment YAML (or the defaults when `path` is None) and apply `key=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config: no such file: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise UserError(f"config: {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        values = loaded or {}
        if not isinstance(values, dict):
            raise UserError(f"config: {p}: the top level must be a mapping")
    for text in overrides:
        values = merge(values, parse_override(text), whole=frozenset({"search_space"}))  # a space is replaced whole
    return from_dict(values)


def replace_path(cfg: ExperimentConfig, dotted: str, value: Any) -> ExperimentConfig:
    """A copy of `cfg` with one dotted setting replaced (validated like YAML input)."""
    values = to_dict(cfg)
    node = values
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return from_dict(values)


