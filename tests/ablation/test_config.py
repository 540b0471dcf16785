"""Config loading: defaults, overrides, and clear errors for unknown keys, wrong types, bad ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablation.config import ExperimentConfig, flatten, load_config, replace_path
from ablation.errors import UserError

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_yaml_overrides_only_what_differs(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "train:\n  lr: 1.0e-5\nmodel:\n  sharing: unshared\n"))
    assert cfg.train.lr == 1e-5 and cfg.model.sharing == "unshared"
    assert cfg.train.batch_size == ExperimentConfig().train.batch_size
    assert cfg.eval.ks == (1, 5, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trian:\n  lr: 1\n", "unknown key 'trian'"),
        ("train:\n  lrr: 1\n", "unknown key train.'lrr'"),
        ("train:\n  batch_size: eight\n", "train.batch_size: expected an integer"),
        ("train:\n  batch_size: 0\n", "train.batch_size: 0 is below the minimum 1"),
        ("negatives:\n  random_rate: 1.5\n", "negatives.random_rate: 1.5 is above the maximum"),
        ("model:\n  pooling: max\n", "model.pooling: 'max' is not one of"),
        ("model:\n  sharing: half\n", "unknown arm 'half'"),
        ("eval:\n  val_tasks: [sdoc, xyz]\n", "eval.val_tasks: 'xyz' is not one of 'sdoc'"),
        ("negatives:\n  random_rate: .nan\n", "negatives.random_rate: expected a finite number"),
        ("study:\n  seeds: [1, -2]\n", "study.seeds: -2 is below the minimum 0"),
        ("study:\n  tuning_seed: -1\n", "study.tuning_seed: -1 is below the minimum 0"),
        (
            "study:\n  search_space:\n    negatives.random_rate: {low: 0, high: 1, log: true}\n",
            "log: true needs low > 0",
        ),
        ("study:\n  search_space:\n    train.epochs: {low: 1, high: 3}\n", "does not name a number setting"),
        ("model:\n  freeze_embeddings: 'yes'\n", "model.freeze_embeddings: expected true/false"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("study:\n  search_space:\n    train.nope: {low: 0, high: 1}\n", "does not name a number setting"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(_write(tmp_path, text))


def test_code_built_sections_are_validated_too() -> None:
    from pydantic import ValidationError

    from ablation.config import ModelConfig, one_line

    with pytest.raises(ValidationError) as err:
        ModelConfig(max_length=4)
    assert one_line(err.value) == "config: max_length: 4 is below the minimum 8"
    with pytest.raises(ValidationError, match="nope"):
        ModelConfig(nope=1)
    with pytest.raises(UserError, match="unknown arm 'half'"):
        replace_path(ExperimentConfig(), "model.sharing", "half")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(None, ["train.lr=[1,"])


def test_missing_file_and_cli_overrides(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    cfg = load_config(None, ["train.epochs=5", "eval.ks=[1, 3]"])
    assert cfg.train.epochs == 5 and cfg.eval.ks == (1, 3)
    assert replace_path(cfg, "negatives.random_rate", 0.25).negatives.random_rate == 0.25
    assert flatten(cfg)["train.epochs"] == 5


@pytest.mark.parametrize("name", ["smoke.yaml", "quick.yaml", "medium.yaml", "paper.yaml"])
def test_shipped_experiments_load(name: str) -> None:
    cfg = load_config(EXPERIMENTS / name)
    assert cfg.study.name == name.removesuffix(".yaml")


def test_a_setting_added_after_a_study_was_recorded_differs_only_where_it_leaves_its_default() -> None:
    from ablation.config import differences, shared_settings

    now = shared_settings(load_config(None))
    old = {k: v for k, v in now.items() if k not in ("train.loss", "train.threads")}  # a record made before them
    assert differences(old, now) == []
    changed = shared_settings(load_config(None, ["train.loss=contrastive"]))
    assert differences(old, changed) == ["train.loss is '(unset)' there, 'contrastive' here"]
    assert differences(now, {**now, "train.lr": 1.0}) == ["train.lr is 3e-06 there, 1.0 here"]
