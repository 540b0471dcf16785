"""Typed, frozen experiment configuration, validated on every construction path (pydantic).

Every setting has a default here; an experiment YAML overrides only what differs. Unknown keys, wrong
types and out-of-range values raise :class:`UserError` naming the offending key, whether the config comes
from YAML, a `--set` override or code.
"""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, model_validator

from ablation.errors import UserError, redact
from ablation.names import OBJECTIVE, TASKS

__all__ = [
    "PER_MACHINE",
    "TASKS",
    "ExperimentConfig",
    "check_name",
    "differences",
    "dump_yaml",
    "flatten",
    "from_dict",
    "load_config",
    "replace_path",
    "shared_settings",
    "to_dict",
]

Seed = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]  # numpy's legacy seeding takes 32 bits
Path_ = Annotated[str, Field(max_length=4096)]  # a path or URL: PATH_MAX
Label = Annotated[str, Field(min_length=1, max_length=256)]  # a name shown in MLflow or a metric key
MAX_CONFIG_BYTES = 1 << 20  # an experiment YAML is a few hundred bytes; bounded before it is parsed
MAX_OVERRIDE_CHARS = 4096  # one `--set key=value`
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class DataConfig(_Section):
    """Which part of the corpus a run uses."""

    corpus: Path_ | None = None  # directory or .zip; None: --corpus, else ARGUANA_DIR, else data/
    themes: tuple[Label, ...] = Field(default=(), max_length=100)  # subset by whole themes; empty: all
    max_debates_per_theme: Annotated[StrictInt, Field(ge=1)] | None = None
    cache_dir: Path_ | None = None  # frozen-prefix caches; None: runs/prefix-cache in the repository


class TinyBertConfig(_Section):
    """A randomly initialised BERT, for tests and smoke runs (no download)."""

    hidden_size: Annotated[StrictInt, Field(ge=8)] = 32
    num_hidden_layers: Annotated[StrictInt, Field(ge=1)] = 2
    num_attention_heads: Annotated[StrictInt, Field(ge=1)] = 2
    intermediate_size: Annotated[StrictInt, Field(ge=8)] = 64

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyBertConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("model.tiny.hidden_size must be divisible by num_attention_heads")
        return self


class ModelConfig(_Section):
    """The encoder and its heads; `sharing` picks the ablation arm."""

    name: Path_ = "all-MiniLM-L6-v2"  # HF id, local path, or "tiny-random"
    sharing: Label = "shared"
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    max_length: Annotated[StrictInt, Field(ge=8, le=512)] = 128
    proj_dim: Annotated[StrictInt, Field(ge=1)] = 128
    freeze_embeddings: StrictBool = False
    freeze_layers: Annotated[StrictInt, Field(ge=0)] = 0  # bottom transformer layers to freeze
    prefix_cache: StrictBool = True  # frozen embeddings + bottom layers: compute their output once per text
    head_init: Literal["pca", "random"] = "pca"  # pca: top principal components of the pooled training texts
    tiny: TinyBertConfig = TinyBertConfig()


class TrainConfig(_Section):
    """Optimisation settings of one run."""

    epochs: Annotated[StrictInt, Field(ge=1)] = 3
    batch_size: Annotated[StrictInt, Field(ge=1)] = 8
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(ge=0.0)] = 3e-6
    head_lr: Annotated[float, Field(ge=0.0)] | None = None  # heads + classifier; None: lr
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    warmup_steps: Annotated[StrictInt, Field(ge=0)] = 0
    grad_clip: Annotated[float, Field(ge=0.0)] | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast: bf16 on CUDA or a CPU with AVX-512 BF16/AMX
    device: Label = "auto"  # auto | cpu | cuda | cuda:N
    # torch threads per run: a study-wide setting, since torch's CPU reductions sum in an order that depends
    # on the thread count; `--workers` then fills the cores with processes, never changing a number
    threads: Annotated[StrictInt, Field(ge=1, le=1024)] = 1
    max_train_queries: Annotated[StrictInt, Field(ge=1)] | None = None
    grad_cosine_every: Annotated[StrictInt, Field(ge=0)] = 10  # 0: never
    # the similarity loss: the seed's triplet loss (L2) or the in-batch contrastive loss (cosine); both add
    # the pair classifier's cross-entropy, and retrieval and mining use the similarity the loss trains
    loss: Literal["triplet", "contrastive"] = "triplet"
    triplet_margin: Annotated[float, Field(gt=0.0)] = 1.0
    contrastive_scale: Annotated[float, Field(gt=0.0)] = 20.0  # cosine × scale are the logits
    bucket_size: Annotated[StrictInt, Field(ge=1)] = 50  # batches per length bucket


class NegativesConfig(_Section):
    """Hard-negative mining with a scheduled share of random negatives: the rate goes linearly from
    `random_rate` at the first step to `random_rate_final` at the last (None: constant)."""

    random_rate: Rate = 0.8
    random_rate_final: Rate | None = None
    reuse_train_embeddings: StrictBool = False
    index: Literal["auto", "balltree", "brute"] = "auto"


class EvalConfig(_Section):
    """What validation and test evaluation compute."""

    ks: tuple[Annotated[StrictInt, Field(ge=1)], ...] = Field(default=(1, 5, 10), min_length=1, max_length=20)
    rerank_k: Annotated[StrictInt, Field(ge=1)] = 10
    val_tasks: tuple[Literal[TASKS], ...] = Field(default=TASKS, min_length=1)  # type: ignore[valid-type]
    batch_size: Annotated[StrictInt, Field(ge=1)] = 64
    max_val_queries: Annotated[StrictInt, Field(ge=1)] | None = None


class TrackingConfig(_Section):
    """Where MLflow writes; --tracking-uri and MLFLOW_TRACKING_URI take precedence."""

    uri: Path_ | None = None
    experiment: Label | None = None  # default: the study name
    system_metrics: StrictBool = True  # CPU, memory (and GPU) of training runs, sampled by MLflow
    system_metrics_interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    # how long a call to the tracking store or the study's database is retried through an outage
    retry_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 300.0


class SearchParam(_Section):
    """One tuned hyperparameter: a float range, sampled by TPE (on a log scale with `log`)."""

    low: float = 0.0
    high: float = 1.0
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchParam:
        if self.low > self.high:
            raise ValueError("low > high")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class StudyConfig(_Section):
    """The ablation study: arms, tuning budget, seeds and objective."""

    # a name, never a path: it names the run and report folders and the Optuna studies
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = "study"
    arms: tuple[Label, ...] = Field(default=("shared", "unshared"), max_length=20)
    n_trials: Annotated[StrictInt, Field(ge=0, le=10_000)] = 4
    seeds: tuple[Seed, ...] = Field(default=(1, 2, 3), min_length=1, max_length=1000)
    tuning_seed: Seed = 0  # trials train under it, and TPE samples with it
    objective: Label = OBJECTIVE  # the bi-encoder itself; the reranker is reported beside it
    direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal["median", "none"] = "median"
    pruner_warmup_epochs: Annotated[StrictInt, Field(ge=0)] = 1
    pruner_startup_trials: Annotated[StrictInt, Field(ge=0)] = 2
    search_space: dict[str, SearchParam] = Field(
        default_factory=lambda: {
            "negatives.random_rate": SearchParam(low=0.0, high=1.0),
            "negatives.random_rate_final": SearchParam(low=0.0, high=1.0),
        }
    )
    storage: Path_ | None = None  # Optuna storage URL; default: JournalStorage file in the run dir
    # with a PostgreSQL storage: a worker without a heartbeat for this long is dead and its work is redone
    lease_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    zero_shot: StrictBool = True
    # an axis: setting → its levels (two settings at most, varied together); each level is a sub-study
    sweep: dict[str, tuple[Any, ...]] = Field(default_factory=dict, max_length=2)
    level: str = ""  # set by the sweep on each of its sub-studies: "<setting>=<value>"
    parent: str = ""  # set by the sweep on each of its sub-studies: the sweep's study name


class ExperimentConfig(_Section):
    """Everything one experiment YAML describes."""

    seed: Seed = 1
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    negatives: NegativesConfig = NegativesConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    study: StudyConfig = StudyConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        from models.arms import ARMS  # local: models imports torch, config must stay light

        for arm in (self.model.sharing, *self.study.arms):
            if arm not in ARMS:
                raise ValueError(f"unknown arm {arm!r} (known: {', '.join(sorted(ARMS))})")
        if len(set(self.study.arms)) != len(self.study.arms) or not self.study.arms:
            raise ValueError("study.arms must list at least one arm, each once")
        for key, param in self.study.search_space.items():
            if _setting_type(key) is not float:
                raise ValueError(f"study.search_space: {key!r} does not name a number setting that can be sampled")
            low, high = _setting_bounds(key)
            if param.low < low or param.high > high:
                raise ValueError(
                    f"study.search_space.{key}: the range {param.low} to {param.high} leaves the setting's own "
                    f"range {low} to {high}"
                )
        _check_sweep(self.study.sweep)
        twice = _first_repeat(self.study.seeds)
        if twice is not None:
            raise ValueError(f"study.seeds: seed {twice} is listed twice (each seed is one final run per arm)")
        return self


def _first_repeat(values: typing.Iterable[Any]) -> Any:
    """The first value equal to an earlier one (numbers by value: 1 and 1.0 are one level), or None."""
    seen: set[Any] = set()
    for value in values:
        key = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        if key in seen:
            return value
        seen.add(key)
    return None


def _is_leaf(dotted: str) -> bool:
    t = _setting_type(dotted)
    return t is not None and not (isinstance(t, type) and issubclass(t, BaseModel)) and typing.get_origin(t) is not dict


def _check_sweep(sweep: dict[str, tuple[Any, ...]]) -> None:
    """The axis names one or two settings outside `study` and `seed`, each with the same number (≥ 2) of
    distinct levels; whether each value suits its setting is checked when the levels are built."""
    if not sweep:
        return
    if len(sweep) > 2:
        raise ValueError(f"study.sweep: at most 2 settings, varied together; got {len(sweep)}")
    for key, levels in sweep.items():
        if key.startswith("study.") or key == "seed" or key in PER_MACHINE or not _is_leaf(key):
            raise ValueError(f"study.sweep: {key!r} is not a setting a sweep can vary")
        if not 2 <= len(levels) <= 50:
            raise ValueError(f"study.sweep.{key}: a sweep needs 2 to 50 levels, got {len(levels)}")
        twice = _first_repeat(levels)
        if twice is not None:
            raise ValueError(f"study.sweep.{key}: the level {twice!r} is listed twice (levels equal as values)")
    if len({len(v) for v in sweep.values()}) > 1:
        raise ValueError("study.sweep: the settings must list the same number of levels (they vary together)")


PER_MACHINE = (
    "data.corpus",
    "data.cache_dir",
    "train.device",
    "tracking.uri",
    "tracking.system_metrics",
    "tracking.system_metrics_interval_s",
    "tracking.retry_s",
    "study.storage",
)
"""Settings that may differ between the processes and machines of one study (paths, devices, services);
every other setting must be the same for all of them (`shared_settings`)."""


def shared_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The flat settings every process of a study must agree on (all but PER_MACHINE)."""
    return {k: v for k, v in flatten(cfg).items() if k not in PER_MACHINE}


def differences(recorded: dict[str, Any], current: dict[str, Any], most: int = 3) -> list[str]:
    """`key: a there, b here` for the first `most` settings that differ. A setting added to the harness after
    a study was recorded, and left at its default, is no difference: the study ran with that default."""
    defaults = flatten(ExperimentConfig())
    keys = sorted(
        k
        for k in recorded.keys() | current.keys()
        if recorded.get(k, "—") != current.get(k, "—")
        and not (k not in recorded and k in defaults and current.get(k) == defaults[k])
    )
    return [f"{k} is {recorded.get(k, '(unset)')!r} there, {current.get(k, '(unset)')!r} here" for k in keys[:most]]


def check_name(name: str, what: str) -> None:
    """A study name given on the command line obeys the same rule as `study.name`."""
    if not re.fullmatch(NAME_PATTERN, name):
        shown = f"{name[:40]}… ({len(name)} characters)" if len(name) > 48 else name
        raise UserError(f"{what}: {shown!r} is not a plain name: {NAME_RULE}")


def _setting_type(dotted: str) -> Any:
    """The plain type of the setting at `dotted` (float for `float | None`), or None if there is none."""
    cls: Any = ExperimentConfig
    for part in dotted.split("."):
        fields = getattr(cls, "model_fields", {})
        if part not in fields:
            return None
        cls = fields[part].annotation
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if typing.get_origin(cls) in (typing.Union, types.UnionType) and args:
            cls = args[0]
        if typing.get_origin(cls) is Annotated:
            cls = typing.get_args(cls)[0]
    return cls


def _setting_bounds(dotted: str) -> tuple[float, float]:
    """The inclusive range the setting at `dotted` accepts (its Field's ge/le; ±inf where unbounded)."""
    section, name = dotted.rsplit(".", 1)
    cls: Any = ExperimentConfig
    for part in section.split("."):
        cls = cls.model_fields[part].annotation
    low, high = -math.inf, math.inf
    for meta in cls.model_fields[name].metadata + _union_metadata(cls.model_fields[name].annotation):
        low = max(low, getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low)
        high = min(high, getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high)
    return low, high


def _union_metadata(annotation: Any) -> list[Any]:
    """The Field constraints inside `Annotated[...] | None`."""
    out = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Annotated:
            out.extend(m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a]))
    return out


_MESSAGES = {
    "int_type": "expected an integer, got {input!r}",
    "int_parsing": "expected an integer, got {input!r}",
    "float_type": "expected a number, got {input!r}",
    "float_parsing": "expected a number, got {input!r}",
    "finite_number": "expected a finite number, got {input!r}",
    "bool_type": "expected true/false, got {input!r}",
    "greater_than_equal": "{input!r} is below the minimum {ge}",
    "less_than_equal": "{input!r} is above the maximum {le}",
    "literal_error": "{input!r} is not one of {expected}",
    "model_type": "expected a mapping, got {kind}",
    "dict_type": "expected a mapping, got {kind}",
    "tuple_type": "expected a list, got {kind}",
    "string_type": "expected a string, got {input!r}",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "{input!r} is not a plain name: " + NAME_RULE,
    "string_too_long": "{input!r} is longer than {max_length} characters",
    "too_long": "holds more than {max_length} entries",
}


def one_line(exc: ValidationError) -> str:
    """The first validation error as `config: <key>: <problem>` (sections built in code raise
    ValidationError; the CLI reports it with this line)."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    if err["type"] == "extra_forbidden":
        where = ".".join(loc[:-1])
        return f"config: unknown key {where + '.' if where else ''}{loc[-1]!r}"
    given = err.get("input")
    shown = f"{given[:40]}… ({len(given)} characters)" if isinstance(given, str) and len(given) > 48 else given
    ctx = {**err.get("ctx", {}), "input": shown, "kind": type(given).__name__}
    template = _MESSAGES.get(err["type"])
    text = template.format(**ctx) if template else str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    return f"config: {'.'.join(loc) + ': ' if loc else ''}{text}"


def from_dict(values: Any) -> ExperimentConfig:
    """Validate a (possibly partial) mapping and fill in defaults."""
    if not isinstance(values, dict):
        raise UserError("config: the top level must be a mapping")
    try:
        return ExperimentConfig.model_validate(values)
    except ValidationError as exc:
        raise UserError(one_line(exc)) from None


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples become lists)."""
    return cfg.model_dump(mode="json")


def flatten(cfg: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1}}` → `{"train.lr": 1}`; used for MLflow params."""
    data = to_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_yaml(cfg: BaseModel) -> str:
    """A config as YAML text, with the password of any URL in it masked (it is recorded and shown)."""
    return redact(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into `base`; a search space is replaced whole."""
    out = dict(base)
    for key, value in override.items():
        merge = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "search_space"
        out[key] = _merge(out[key], value) if merge else value
    return out


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)
    and aliases (`*name`): an experiment has no use for them, and nested aliases expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"aliases are not allowed (line {mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                line = node.value[i][0].start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice (line {line})")
        return super().construct_mapping(node, deep=deep)


def _read_yaml(p: Path) -> dict[str, Any]:
    """An experiment YAML as a mapping: a text file of at most MAX_CONFIG_BYTES holding one mapping, each
    key once, no aliases."""
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UserError(f"config: {p} is {size:,} bytes; an experiment YAML is at most {MAX_CONFIG_BYTES:,}")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config: {p} is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise UserError(f"config: cannot read {p}: {exc.strerror}") from None
    try:
        values = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"config: {p} is not valid YAML: {' '.join(str(exc).split())}") from None
    if values is None:
        raise UserError(f"config: {p} is empty (an experiment YAML overrides at least one default)")
    if not isinstance(values, dict):
        raise UserError(f"config: {p}: the top level must be a mapping")
    return values


def _parse_override(text: str) -> dict[str, Any]:
    """`train.lr=1e-5` → {"train": {"lr": 1e-5}} (the value is parsed as YAML)."""
    if len(text) > MAX_OVERRIDE_CHARS:
        raise UserError(f"override {text[:40]!r}…: {len(text):,} characters; at most {MAX_OVERRIDE_CHARS:,}")
    if "=" not in text:
        raise UserError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value: Any = yaml.load(raw, Loader=_StrictLoader) if raw else ""
    except yaml.YAMLError as exc:
        raise UserError(f"override {text!r}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load an experiment YAML (or the defaults when `path` is None) and apply `key=value` overrides."""
    values: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config: no such file: {p}")
        values = _read_yaml(p)
    for text in overrides:
        values = _merge(values, _parse_override(text))
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
