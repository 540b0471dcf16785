"""The frozen-prefix cache: the token vectors that a frozen embedding layer and bottom layers give each text,
computed once per study and read by every arm, trial, seed and worker.

Their output depends on the tokens alone (the prefix runs without dropout), so training, negative refresh
and evaluation only need the layers above it. The vectors of a split's texts are stored as one float16
array memory-mapped from disk, with each text's row offsets. The file name is a digest of everything the
vectors depend on: the prefix's weights (model, revision), its depth, and the token ids of every text
(tokenizer, max_length, corpus and subset). It is built under a file lock and renamed into place only when
complete, so a killed build leaves no half file and a rerun reuses a finished one. A finished store also
carries the SHA-256 of its two arrays (`.sha256.json`), checked each time it is opened: a file changed,
cut short or missing since is rebuilt, with one warning line, instead of giving wrong numbers. The same file
records what the store is (the digest its name comes from, its number of texts and tokens, its width), and
its offsets must give each text its own length: a complete store of other texts put in its place (another
split's, say) is rebuilt too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ablation.data.batching import Tokens, TokenTexts, length_sorted_batches
from ablation.io import write_text_atomic
from models.pooling import Tower


def prefix_digest(tower: Tower) -> str:
    """A digest of the tower's frozen prefix: its depth and weights (model and revision alike)."""
    h = hashlib.sha256(f"prefix_layers={tower.prefix_layers}".encode())
    for module in tower.frozen_modules():
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode() + tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _digest(prefix: str, tokens: Tokens) -> str:
    h = hashlib.sha256(prefix.encode())
    for t in tokens:
        h.update(np.asarray(t, dtype=np.int32).tobytes() + b"|")
    return h.hexdigest()[:24]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _parts(path: Path) -> tuple[Path, Path]:
    """The offsets file and the digest file beside a store's vectors."""
    return path.with_suffix(".offsets.npy"), path.with_suffix(".sha256.json")


def _sums(vectors: Path, offsets: Path) -> dict[str, str]:
    return {"vectors": file_sha256(vectors), "offsets": file_sha256(offsets)}


def identity(path: Path, tokens: Tokens, hidden: int) -> dict[str, object]:
    """What a store of `tokens` at `path` is: the digest in its name, its texts, tokens and width."""
    return {
        "key": path.stem.removeprefix("prefix-"),
        "texts": len(tokens),
        "tokens": int(sum(len(t) for t in tokens)),
        "hidden": hidden,
    }


def verify(path: Path, expected: dict[str, object] | None = None, lengths: np.ndarray | None = None) -> str | None:
    """What is wrong with a finished store, or None when its arrays match their recorded digests and, given
    `expected` (its `identity`) and the texts' `lengths`, it is the store of those texts. A store recorded
    before identities were kept passes on its offsets alone and gets its identity written."""
    offsets, sums = _parts(path)
    missing = [p.name for p in (offsets, sums) if not p.exists()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        recorded = json.loads(sums.read_text())
        digests = {k: recorded[k] for k in ("vectors", "offsets")}
    except (ValueError, KeyError, TypeError):
        return f"{sums.name} unreadable"
    if _sums(path, offsets) != digests:
        return "contents differ from their recorded digest"
    if expected is None:
        return None
    stored = np.load(offsets)
    if lengths is not None and (len(stored) != len(lengths) + 1 or not np.array_equal(np.diff(stored), lengths)):
        return f"it holds other texts ({len(stored) - 1} texts, not the {len(lengths)} asked for)"
    found = {k: recorded.get(k) for k in expected}
    if all(v is None for v in found.values()):  # recorded before identities were kept: its offsets fit
        write_text_atomic(json.dumps({**digests, **expected}), sums)
    elif found != expected:
        wrong = ", ".join(f"{k} {found[k]} (expected {expected[k]})" for k in expected if found[k] != expected[k])
        return f"it is another store: {wrong}"
    return None


@dataclass(frozen=True)
class PrefixStore:
    """Cached prefix vectors of a list of texts: rows ``offsets[i]:offsets[i + 1]`` of `vectors` are text i."""

    vectors: np.ndarray  # [tokens, hidden] float16, memory-mapped
    offsets: np.ndarray  # [texts + 1]
    path: Path

    @classmethod
    def build_or_load(
        cls,
        folder: Path,
        tower: Tower,
        tokens: Tokens,
        pad_id: int,
        batch_size: int,
        device: torch.device,
        prefix: str | None = None,
    ) -> PrefixStore:
        """The store of `tokens` under `tower`'s frozen prefix: read if a finished one exists, else built.
        `prefix` is the tower's `prefix_digest`, for callers that open several stores of one tower."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"prefix-{_digest(prefix or prefix_digest(tower), tokens)}.npy"
        offsets_path, sums_path = _parts(path)
        expected = identity(path, tokens, int(tower.encoder.config.hidden_size))
        lengths = np.array([len(t) for t in tokens])
        with FileLock(str(path) + ".lock"):
            problem = verify(path, expected, lengths) if path.exists() else None
            if problem:
                print(f"warning: frozen-prefix cache {path}: {problem}; building it again", file=sys.stderr)
                for part in (path, offsets_path, sums_path):
                    part.unlink(missing_ok=True)
            if not path.exists():
                cls._build(path, offsets_path, tower, tokens, pad_id, batch_size, device)
        vectors = np.load(path, mmap_mode="r")
        if vectors.shape != (expected["tokens"], expected["hidden"]):  # the digests were recorded with it
            raise RuntimeError(f"frozen-prefix cache {path}: shape {vectors.shape} after its checks passed")
        return cls(vectors, np.load(offsets_path), path)

    @staticmethod
    def _build(
        path: Path, offsets_path: Path, tower: Tower, tokens: Tokens, pad_id: int, batch_size: int, device: torch.device
    ) -> None:
        lengths = np.array([len(t) for t in tokens])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        hidden = int(tower.encoder.config.hidden_size)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), hidden))
            texts = TokenTexts(tokens, pad_id)
            batches = length_sorted_batches(lengths, batch_size)
            was_training = tower.training
            tower.eval()
            for idx in tqdm(batches, desc="frozen-prefix cache", unit="batch", leave=False, disable=None):
                batch = texts.batch(idx)
                vectors = tower.prefix(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                vectors = vectors.to(torch.float16).cpu().numpy()
                for row, i in enumerate(idx):
                    out[offsets[i] : offsets[i + 1]] = vectors[row, : lengths[i]]
            tower.train(was_training)
            out.flush()
            del out
            np.save(offsets_path, offsets)
            record = {**_sums(tmp, offsets_path), **identity(path, tokens, hidden)}
            _parts(path)[1].write_text(json.dumps(record))
            os.replace(tmp, path)  # last: the store exists only once complete
        finally:
            tmp.unlink(missing_ok=True)

    @property
    def size_bytes(self) -> int:
        return int(self.vectors.nbytes + self.offsets.nbytes)


@dataclass(frozen=True)
class PrefixTexts:
    """Some of a store's texts (`rows`), batched as the prefix's output (float32) and an attention mask."""

    store: PrefixStore
    rows: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.store.offsets)[self.rows]

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        rows = self.rows[idx]
        starts, ends = self.store.offsets[rows], self.store.offsets[rows + 1]
        width = int((ends - starts).max())
        prefix = np.zeros((len(rows), width, self.store.vectors.shape[1]), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
            prefix[k, : b - a] = self.store.vectors[a:b]
            mask[k, : b - a] = 1
        return {"prefix": torch.from_numpy(prefix), "attention_mask": torch.from_numpy(mask)}


def split_texts(store: PrefixStore, n: int) -> tuple[PrefixTexts, PrefixTexts]:
    """(queries, candidates) of a split whose store holds its candidates (counters, then points): query i
    is point i, the candidate n + i."""
    return PrefixTexts(store, np.arange(n, 2 * n)), PrefixTexts(store, np.arange(2 * n))
