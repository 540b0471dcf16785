"""The sharing arms of the ablation: one small function each, registered by name.

An arm receives one freshly built encoder tower and one similarity head and returns the four modules
(query tower, candidate tower, query head, candidate head). Returning the *same object* twice is what
sharing means; `copy.deepcopy` gives a separate module with identical starting weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

Modules = tuple[nn.Module, nn.Module, nn.Module, nn.Module]
ArmBuilder = Callable[[nn.Module, nn.Module], Modules]
ARMS: dict[str, ArmBuilder] = {}


def register(name: str) -> Callable[[ArmBuilder], ArmBuilder]:
    """Add an arm under `name` (usable as `model.sharing` and in `study.arms`)."""

    def add(fn: ArmBuilder) -> ArmBuilder:
        ARMS[name] = fn
        return fn

    return add


@register("shared")
def shared(tower: nn.Module, head: nn.Module) -> Modules:
    """Siamese: one encoder and one similarity head serve both sides."""
    return tower, tower, head, head


@register("unshared")
def unshared(tower: nn.Module, head: nn.Module) -> Modules:
    """Asymmetric: two encoders and two heads, identical at the start, both trained."""
    return tower, copy.deepcopy(tower), head, copy.deepcopy(head)


@register("shared_projection")
def shared_projection(tower: nn.Module, head: nn.Module) -> Modules:
    """Separate encoders, one shared similarity head (ADE-SPL, Dong et al. 2022)."""
    return tower, copy.deepcopy(tower), head, head


@register("shared_embeddings")
def shared_embeddings(tower: nn.Module, head: nn.Module) -> Modules:
    """Separate encoders sharing the token-embedding layer (ADE-STE, Dong et al. 2022)."""
    other = copy.deepcopy(tower)
    other.encoder.embeddings.word_embeddings = tower.encoder.embeddings.word_embeddings
    return tower, other, head, copy.deepcopy(head)


@register("frozen_candidate")
def frozen_candidate(tower: nn.Module, head: nn.Module) -> Modules:
    """Separate encoders with the candidate side frozen (what the old scripts effectively trained)."""
    other, other_head = copy.deepcopy(tower), copy.deepcopy(head)
    other.requires_grad_(False)
    other_head.requires_grad_(False)
    return tower, other, head, other_head
