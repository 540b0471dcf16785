"""A sweep: one study whose `study.sweep` varies a setting (two at most, together) over levels. Each level is
a complete sub-study (`<study>.<setting>-<value>`): its own Optuna queues with the study's budget, its own
final seeds, and a zero-shot reference of its own only where the level changes what the untrained encoder
sees; otherwise the first level's reference serves every level. The sub-studies share the study's MLflow
experiment, run folder and frozen-prefix cache folder; each level's study run sits under the sweep's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablation.config import ExperimentConfig, check_name, flatten, from_dict, to_dict
from ablation.errors import UserError

# settings the untrained encoder's rankings do not depend on: a level varying only these shares one reference
_NOT_ZERO_SHOT = ("train.", "negatives.", "study.", "tracking.", "seed")
_NOT_ZERO_SHOT_MODEL = (
    "sharing",
    "pooling",
    "proj_dim",
    "freeze_embeddings",
    "freeze_layers",
    "prefix_cache",
    "head_init",
)


@dataclass(frozen=True)
class Level:
    """One level of a sweep: its values, label, sub-study config and run folder."""

    index: int
    values: dict[str, Any]
    label: str  # "freeze_layers=5": the `level` tag and param of every run of the level
    cfg: ExperimentConfig
    folder: Path

    @property
    def name(self) -> str:
        return self.cfg.study.name


def _value_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def changes_zero_shot(key: str) -> bool:
    """Whether a setting changes what the untrained encoder ranks (its model, input, data or metrics)."""
    if key.startswith(_NOT_ZERO_SHOT):
        return False
    return not (key.startswith("model.") and key.split(".")[1] in _NOT_ZERO_SHOT_MODEL)


def levels(cfg: ExperimentConfig, folder: Path) -> list[Level]:
    """The sweep's levels in order, each config validated and named (a UserError names a bad one)."""
    s = cfg.study
    keys = list(s.sweep)
    own_zero_shot = any(changes_zero_shot(k) for k in keys)
    out = []
    for i in range(len(next(iter(s.sweep.values())))):
        values = {k: s.sweep[k][i] for k in keys}
        suffix = ".".join(f"{k.split('.')[-1]}-{_value_text(v)}" for k, v in values.items())
        name = f"{s.name}.{suffix}"
        check_name(name, f"study.sweep: the sub-study of level {i + 1}")
        tree = to_dict(cfg)
        for key, value in values.items():
            node = tree
            *path, leaf = key.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
        tree["study"].update(
            name=name,
            sweep={},
            level=", ".join(f"{k.split('.')[-1]}={_value_text(v)}" for k, v in values.items()),
            parent=s.name,
            zero_shot=s.zero_shot and (own_zero_shot or i == 0),
        )
        tree["tracking"]["experiment"] = cfg.tracking.experiment or s.name
        try:
            level_cfg = from_dict(tree)
        except UserError as exc:
            raise UserError(f"study.sweep level {i + 1} ({suffix}): {exc}") from None
        for key, value in values.items():
            if flatten(level_cfg)[key] != value:
                raise UserError(f"study.sweep.{key}: level {value!r} does not fit the setting")
        out.append(Level(i, values, level_cfg.study.level, level_cfg, folder / name))
    return out


def zero_shot_study(level: Level, all_levels: list[Level]) -> str:
    """The sub-study whose zero-shot run is this level's reference."""
    return level.name if level.cfg.study.zero_shot else all_levels[0].name
