"""Precision: bf16 runs under CPU autocast only where the CPU computes bf16 natively, never slower in silence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablation.errors import UserError
from ablation.runtime import autocast, check_precision, cpu_bf16_flags

WITH = "flags : fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n"
WITHOUT = "flags : fpu sse avx2 avx512f avx512bw\n"


def test_bf16_flags_are_read_as_whole_words() -> None:
    assert cpu_bf16_flags(WITH) == ["avx512_bf16", "amx_bf16"]
    assert cpu_bf16_flags(WITHOUT) == [] and cpu_bf16_flags("flags : xavx512_bf16x") == []


def test_bf16_on_a_cpu_without_it_is_refused_with_the_reason() -> None:
    cpu = torch.device("cpu")
    check_precision(cpu, "bf16", WITH)
    check_precision(cpu, "fp32", WITHOUT)
    with pytest.raises(UserError, match="neither AVX-512 BF16 nor AMX"):
        check_precision(cpu, "bf16", WITHOUT)
    with pytest.raises(UserError, match="fp16 autocast is for CUDA"):
        check_precision(cpu, "fp16", WITH)


def test_cpu_autocast_computes_in_bf16_and_fp32_stays_exact() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert torch.equal(a @ b, torch.mm(a, b))


_DYING_PARENT = """
import ctypes, os, subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
threading.Thread(target=time.sleep, args=(5,)).start()
ctypes.CDLL(None).pthread_exit(None)  # the main thread ends first, as in a kill; the other one lives on
"""

_CHILD = """
import os, sys, time
from ablation.runtime import parent_gone
parent, out = int(sys.argv[1]), sys.argv[2]
with open(out, "w") as f:
    print("alive:", parent_gone(parent), file=f, flush=True)
    while not parent_gone(parent):
        time.sleep(0.01)
    print("parent still my parent:", os.getppid() == parent, file=f, flush=True)
"""


def test_a_parent_whose_main_thread_has_exited_is_gone_though_it_is_still_the_parent(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "child.txt"
    subprocess.run([sys.executable, "-c", _DYING_PARENT, _CHILD, str(out)], timeout=60, check=True)
    # read once the dying process has gone: getppid() alone would only now say it is gone
    assert out.read_text().splitlines() == ["alive: False", "parent still my parent: True"]
