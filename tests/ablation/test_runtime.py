"""Precision: bf16 runs under CPU autocast only where the CPU computes bf16 natively, never slower in silence."""

from __future__ import annotations

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
