"""Seeding, device choice and signals: what every run sets up first."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ablation.errors import UserError


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a NumPy generator derived from `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available; an unavailable explicit device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device: {name!r} is not supported (cpu, cuda, cuda:N or auto)")
    return device


def deterministic(device: torch.device) -> None:
    """On CUDA, ask for deterministic kernels, so that a seed repeats there as it does on CPU. cuBLAS reads
    its workspace setting when it first starts, so this runs before any CUDA work; an operation that has no
    deterministic kernel warns instead of failing (`make gpu-check` measures whether runs repeat)."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def describe_device(device: torch.device) -> str:
    """Human-readable device name for tags and reports."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU features that compute bf16 natively; without them oneDNN emulates bf16, slower than fp32."""


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of CPU_BF16_FLAGS this CPU has (from /proc/cpuinfo; none where it cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    words = set(cpuinfo.split())
    return [f for f in CPU_BF16_FLAGS if f in words]


def check_precision(device: torch.device, precision: str, cpuinfo: str | None = None) -> None:
    """A precision the device runs fast: bf16 on a CPU only with AVX-512 BF16 or AMX (never a silent
    slowdown), fp16 only on CUDA."""
    if device.type != "cpu" or precision == "fp32":
        return
    if precision == "fp16":
        raise UserError("config: train.precision: fp16 autocast is for CUDA; on a CPU use bf16 or fp32")
    if not cpu_bf16_flags(cpuinfo):
        raise UserError(
            "config: train.precision: bf16 on this CPU would be emulated, slower than fp32 (it has neither "
            "AVX-512 BF16 nor AMX); use fp32, or a CUDA device"
        )


def describe_precision(device: torch.device, precision: str) -> str:
    """The precision a run used, for its tags and the report."""
    if precision == "fp32":
        return "fp32"
    where = "CUDA" if device.type == "cuda" else f"CPU, {' + '.join(cpu_bf16_flags()) or 'emulated'}"
    return f"{precision} autocast ({where})"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA, bf16 autocast on a CPU (`check_precision` says where it is fast); a no-op
    for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Interrupts:
    """SIGINT, SIGTERM and SIGHUP as one KeyboardInterrupt, raised only where it is safe.

    Inside `critical()` (every call to a store: a database write must not stop half-way, holding its lock)
    the interrupt waits until the block ends. Only the first signal counts: a second one during the cleanup
    it started (ending runs KILLED) is ignored, so cleanup cannot itself be interrupted. `signum` says which
    signal came, for the exit code 128 + signum."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0
        self._raised = False

    def install(self) -> None:
        """Handle the signals in this process (main thread only, as Python requires)."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return  # a second signal: the first one's cleanup goes on
        self.signum = signum
        if self._depth == 0:
            self._raise()

    def _raise(self) -> None:
        self._raised = True
        raise KeyboardInterrupt(f"signal {self.signum}")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block that a signal does not cut short (in the main thread; other threads get no signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self.signum is not None and not self._raised:
                self._raise()

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it (130 for Ctrl-C)."""
        return 128 + (self.signum or signal.SIGINT)


def parent_gone(parent: int) -> bool:
    """Whether this process's parent `parent` has died or is dying. A killed process's main thread exits
    first and waits as a zombie while its other threads die; meanwhile its children (told of the death by
    PR_SET_PDEATHSIG) still see it as their parent, so `getppid()` alone answers too early."""
    if os.getppid() != parent:
        return True
    try:
        return Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


INTERRUPTS = Interrupts()
"""The process's one handler (installed by the commands that run studies)."""
