"""The recording interface the trainer writes to; MLflow's `RunRecorder` and an in-memory one implement it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Recorder(Protocol):
    """Where a run's params, tags, metrics and artifacts go."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_text(self, text: str, path: str) -> None: ...
    def log_artifact(self, local_path: str | Path, folder: str | None = None) -> None: ...
    def flush(self) -> None: ...


class MemoryRecorder:
    """Keeps everything in memory: for tests, benchmarks and runs without tracking."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int]] = []
        self.texts: dict[str, str] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = text

    def log_artifact(self, local_path: str | Path, folder: str | None = None) -> None:
        self.texts[f"{folder or ''}/{Path(local_path).name}"] = Path(local_path).read_text()

    def flush(self) -> None:
        pass

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in logging order."""
        return [(s, v) for k, v, s in self.metrics if k == key]
