"""Seeding and device choice: the two things every run sets up first."""

from __future__ import annotations

import contextlib
import os
import random

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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op on CPU or for fp32 (CPU runs stay exact and deterministic)."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
