"""The data of one run: the three splits (subset as configured), tokenised once, and the tokenizer.

Loading happens before any MLflow run is created, so a bad corpus or model fails without leaving a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ablation import encoders
from ablation.config import ExperimentConfig
from ablation.data.batching import Tokens, tokenize
from ablation.data.corpus import Split, read_split, resolve_corpus
from ablation.data.slices import Slices, query_slices, training_texts


@dataclass(frozen=True)
class TokenizedSplit:
    """A split with token ids of its queries (points) and its candidates (counters, then points), and the
    query slices its results are also reported on."""

    split: Split
    query_tokens: Tokens
    cand_tokens: Tokens
    slices: Slices = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RunData:
    """Everything a run reads: tokenizer, training/validation/test splits, corpus location and digest."""

    tokenizer: PreTrainedTokenizerBase
    train: TokenizedSplit
    val: TokenizedSplit
    test: TokenizedSplit
    corpus: str
    digest: str

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def _head(split: Split, limit: int | None) -> Split:
    """The first `limit` pairs (splits are sorted by theme and debate, so whole debates are kept first)."""
    if limit is None or limit >= split.n:
        return split
    return dataclasses.replace(
        split,
        queries=split.queries.iloc[:limit].reset_index(drop=True),
        counters=split.counters.iloc[:limit].reset_index(drop=True),
    )


def tokenized_split(
    split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int, seen: frozenset[str] | None = None
) -> TokenizedSplit:
    """A split tokenised once; with the training texts `seen`, its query slices too."""
    q = tokenize(tokenizer, list(split.queries["text"]), max_length)
    c = tokenize(tokenizer, list(split.counters["text"]), max_length)
    return TokenizedSplit(split, q, c + q, query_slices(split, seen) if seen is not None else {})


def load_run_data(cfg: ExperimentConfig, corpus: str | None = None) -> RunData:
    """Read and tokenise the configured splits (raises UserError on a bad corpus or model)."""
    path = resolve_corpus(corpus, cfg.data.corpus)
    kw = {"themes": cfg.data.themes, "max_debates_per_theme": cfg.data.max_debates_per_theme}
    train = _head(read_split(path, "training", **kw), cfg.train.max_train_queries)
    val = _head(read_split(path, "validation", **kw), cfg.eval.max_val_queries)
    test = read_split(path, "test", **kw)
    seen = training_texts(path)  # the whole training split, whatever part of it this run trains on
    tokenizer = encoders.tokenizer(cfg.model)
    L = cfg.model.max_length
    digest = "-".join(s.digest[:12] for s in (train, val, test))
    return RunData(
        tokenizer,
        tokenized_split(train, tokenizer, L),
        tokenized_split(val, tokenizer, L, seen),
        tokenized_split(test, tokenizer, L, seen),
        str(path),
        digest,
    )
