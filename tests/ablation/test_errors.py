"""Secrets are masked wherever the harness shows or records a URL: text, streams, YAML, MLflow writes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ablation.config import dump_yaml, load_config
from ablation.errors import RedactingStream, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://postgres:s3cret@127.0.0.1:55432/optuna", "postgresql://postgres:***@127.0.0.1:55432/optuna"),
        ("postgresql+psycopg://u:p%40ss@h/db?sslmode=require", "postgresql+psycopg://u:***@h/db?sslmode=require"),
        ("error: study.storage 'mysql://a:b@c@d/e': cannot", "error: study.storage 'mysql://a:***@d/e': cannot"),
        ("http://admin:pw@127.0.0.1:5000 and http://x:y@h", "http://admin:***@127.0.0.1:5000 and http://x:***@h"),
        ("host=h password=hunter2 dbname=x", "host=h password=*** dbname=x"),
        ("postgresql://postgres@127.0.0.1/optuna", "postgresql://postgres@127.0.0.1/optuna"),
        ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
        ("mail me at a@b.org", "mail me at a@b.org"),
    ],
)
def test_passwords_in_urls_are_masked_and_nothing_else_changes(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_streams_yaml_and_mlflow_writes_never_carry_the_password(tmp_path: Path) -> None:
    from ablation.tracking.store import Tracker

    url = "postgresql://postgres:hunter2@127.0.0.1:1/optuna"
    out = io.StringIO()
    RedactingStream(out).write(f"warning: {url} is down\n")
    assert "hunter2" not in out.getvalue() and "postgres:***@" in out.getvalue()
    cfg = load_config(None, [f"study.storage={url}"])
    assert "hunter2" not in dump_yaml(cfg) and cfg.study.storage == url  # the config itself keeps it to connect
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracker.run("e", "r", {"role": "x"}) as rec:
        rec.log_params({"study.storage": url})
        rec.set_tags({"note": f"at {url}"})
        rec.log_text(f"storage: {url}\n", "config.yaml")
        run = rec.run_id
    tracker.set_tags(run, {"failure": f"OperationalError at {url}"})
    got = tracker.client.get_run(run).data
    assert got.params["study.storage"] == "postgresql://postgres:***@127.0.0.1:1/optuna"
    assert "hunter2" not in str(got.tags) and "hunter2" not in tracker.read_text(run, "config.yaml")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]
