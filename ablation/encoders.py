"""The harness's door to `models/`: the model section of the config as `models`' own arguments, and its
ValueErrors as one-line user errors (a bad model name or freeze depth is bad input, not a crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from ablation.config import ModelConfig
from ablation.errors import UserError
from models.backbone import TinyBert, layer_count, load_encoder, load_tokenizer
from models.biencoder import BiEncoder, BiEncoderSpec, build_biencoder

T = TypeVar("T")


def _user_error(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ValueError as exc:
        raise UserError(f"model: {exc}") from None


def spec(cfg: ModelConfig) -> BiEncoderSpec:
    """The bi-encoder `cfg` describes, in `models`' terms."""
    return BiEncoderSpec(
        name=cfg.name,
        sharing=cfg.sharing,
        pooling=cfg.pooling,
        max_length=cfg.max_length,
        proj_dim=cfg.proj_dim,
        freeze_embeddings=cfg.freeze_embeddings,
        freeze_layers=cfg.freeze_layers,
        tiny=TinyBert(**cfg.tiny.model_dump()),
    )


def check(cfg: ModelConfig) -> None:
    """What the model section asks of the model itself, checked from its config before anything runs."""
    layers = _user_error(lambda: layer_count(cfg.name, spec(cfg).tiny))
    if cfg.freeze_layers > layers:
        raise UserError(f"config: model.freeze_layers: {cfg.freeze_layers} is above the {layers} layers of {cfg.name}")


def tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer."""
    return _user_error(lambda: load_tokenizer(cfg.name))


def encoder(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """The bare pretrained encoder (what the zero-shot row uses)."""
    s = spec(cfg)
    return _user_error(lambda: load_encoder(s.name, vocab_size, s.pooling, s.max_length, s.tiny))


def biencoder(cfg: ModelConfig, vocab_size: int) -> BiEncoder:
    """The arm's bi-encoder."""
    return _user_error(lambda: build_biencoder(spec(cfg), vocab_size))
