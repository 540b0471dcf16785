"""Reader for the ArguAna Counterargs corpus (Wachsmuth, Syed, Stein, ACL 2018), from a folder or a zip.

Layout: ``<split>/<theme>/<debate>/<pro|con>/<stance><NN><a|b>-<point|counter>.txt``. A point and its
counter share theme, debate, stance and number; unpaired points or counters are dropped and counted.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ablation.errors import UserError
from ablation.io import REPO_ROOT

SPLITS = ("training", "validation", "test")
FILE_RE = re.compile(r"^(pro|con)(\d+)([ab])-(point|counter)\.txt$")
DEFAULT_CORPUS = REPO_ROOT / "data" / "arguana-counterargs"


@dataclass(frozen=True)
class Split:
    """One split as aligned pairs: ``queries.iloc[i]`` is a point, ``counters.iloc[i]`` its counter.

    The candidate universe of the split is ``counters`` followed by ``queries`` (points as candidates),
    so query ``i``'s true candidate is index ``i`` and the query itself is index ``n + i``.
    """

    name: str
    queries: pd.DataFrame  # columns: id, theme, debate, stance, number, text
    counters: pd.DataFrame
    dropped_points: int
    dropped_counters: int
    digest: str
    derived: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Structures computed from the split once and reused (the task pools); not copied by `replace`."""

    @property
    def n(self) -> int:
        return len(self.queries)

    @property
    def candidate_ids(self) -> list[str]:
        return list(self.counters["id"]) + list(self.queries["id"])

    @property
    def candidate_texts(self) -> list[str]:
        return list(self.counters["text"]) + list(self.queries["text"])

    @cached_property
    def text_codes(self) -> np.ndarray:
        """Per candidate (counters, then points), a code shared by exactly the candidates of equal text."""
        return text_codes(self.candidate_texts)

    def copies(self, of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, column) with ``text_codes[column] == text_codes[of[row]]`` and ``column != of[row]``:
        the other candidates whose text equals that of candidate ``of[row]`` (columns ascending per row)."""
        codes = self.text_codes
        order = np.argsort(codes, kind="stable")
        lo = np.searchsorted(codes[order], codes[of], side="left")
        hi = np.searchsorted(codes[order], codes[of], side="right")
        sizes = hi - lo
        rows = np.repeat(np.arange(len(of)), sizes)
        cols = order[np.repeat(lo, sizes) + np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)]
        keep = cols != of[rows]
        return rows[keep], cols[keep]


def normalize_text(text: str) -> str:
    """A text as compared for identity: runs of white space folded to one space, ends stripped. The corpus
    repeats arguments under several debates and themes with differing line breaks."""
    return " ".join(text.split())


def text_codes(texts: Sequence[str]) -> np.ndarray:
    """One integer per text, equal exactly where the normalised texts are equal."""
    return pd.factorize(pd.Series([normalize_text(t) for t in texts], dtype=object))[0]


def resolve_corpus(cli_path: str | None = None, config_path: str | None = None) -> Path:
    """The corpus location: --corpus, else the config, else ARGUANA_DIR, else data/ in the repo."""
    for candidate in (cli_path, config_path, os.environ.get("ARGUANA_DIR") or None):
        if candidate:
            return Path(candidate).expanduser()
    return DEFAULT_CORPUS


class _Source:
    """Uniform listing/reading over a corpus folder or zip; paths are POSIX, relative to the corpus root."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise UserError(f"corpus: no such file or directory: {path} (set --corpus or ARGUANA_DIR)")
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise UserError(f"corpus: {path} is neither a directory nor a zip file")
            self.zip = zipfile.ZipFile(path)
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            for name in names:
                pure = PurePosixPath(name.replace("\\", "/"))
                if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
                    raise UserError(f"corpus: unsafe path in zip {path}: {name!r}")
            self.root = self._zip_root(names)
            self.files = [n for n in names if n.startswith(self.root)]
        else:
            self.root = ""
            self.files = []

    @staticmethod
    def _zip_root(names: Sequence[str]) -> str:
        """The prefix under which the split folders lie (zips often wrap the corpus in a folder)."""
        best: str | None = None
        for name in names:
            parts = name.split("/")
            for i, part in enumerate(parts[:-1]):
                if part in SPLITS:
                    prefix = "/".join(parts[:i])
                    prefix = prefix + "/" if prefix else ""
                    if best is None or len(prefix) < len(best):
                        best = prefix
                    break
        return best or ""

    def has_split(self, split: str) -> bool:
        if self.zip is None:
            return (self.path / split).is_dir()
        return any(f.startswith(f"{self.root}{split}/") for f in self.files)

    def list_split(self, split: str) -> Iterator[str]:
        """Relative paths (below the split folder) of every file of the split, sorted."""
        if self.zip is None:
            base = self.path / split
            found = [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]
        else:
            prefix = f"{self.root}{split}/"
            found = [f[len(prefix) :] for f in self.files if f.startswith(prefix)]
        return iter(sorted(found))

    def read(self, split: str, rel: str) -> bytes:
        if self.zip is None:
            return (self.path / split / rel).read_bytes()
        return self.zip.read(f"{self.root}{split}/{rel}")


def _parse_split(source: _Source, split: str, themes: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Every point/counter file of a split as a table, plus the sha256 digest of the files read."""
    rows = []
    digest = hashlib.sha256()
    wanted = set(themes)
    for rel in source.list_split(split):
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or len(parts) != 4:
            continue  # hidden files and files outside stance folders (e.g. debate metadata)
        theme, debate, folder, fname = parts
        if wanted and theme not in wanted:
            continue
        where = f"{split}/{rel}"
        m = FILE_RE.match(fname)
        if (
            not m
            or folder not in ("pro", "con")
            or m.group(1) != folder
            or (m.group(3) == "a") != (m.group(4) == "point")
        ):
            raise UserError(
                f"corpus: file name does not match <pro|con>/<stance><NN><a|b>-<point|counter>.txt: {where}"
            )
        raw = source.read(split, rel)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"corpus: not valid UTF-8 text: {where}") from None
        if not text.strip():
            raise UserError(f"corpus: empty text: {where}")
        digest.update(where.encode() + b"\0" + raw + b"\0")
        rows.append((theme, debate, m.group(1), int(m.group(2)), m.group(4), text.strip()))
    frame = pd.DataFrame(rows, columns=["theme", "debate", "stance", "number", "kind", "text"])
    return frame, digest.hexdigest()


def read_split(
    path: str | Path,
    split: str,
    themes: Sequence[str] = (),
    max_debates_per_theme: int | None = None,
) -> Split:
    """Read one split, pair points with counters, and optionally keep only whole themes/debates."""
    if split not in SPLITS:
        raise UserError(f"corpus: no such split {split!r} (splits: {', '.join(SPLITS)})")
    source = _Source(Path(path))
    if not source.has_split(split):
        raise UserError(f"corpus: split {split!r} not found in {path}")
    frame, digest = _parse_split(source, split, themes)
    if themes:
        missing = sorted(set(themes) - set(frame["theme"]))
        if missing:
            raise UserError(f"corpus: no such theme in split {split!r}: {', '.join(missing)}")
    if frame.empty:
        raise UserError(f"corpus: split {split!r} in {path} has no point/counter files")
    if max_debates_per_theme is not None:
        keep = (
            frame[["theme", "debate"]]
            .drop_duplicates()
            .sort_values(["theme", "debate"])
            .groupby("theme")
            .head(max_debates_per_theme)
        )
        frame = frame.merge(keep, on=["theme", "debate"])
    key = ["theme", "debate", "stance", "number"]
    points = frame[frame["kind"] == "point"].drop(columns="kind")
    counters = frame[frame["kind"] == "counter"].drop(columns="kind")
    pairs = points.merge(counters, on=key, suffixes=("_point", "_counter")).sort_values(key, ignore_index=True)
    if pairs.empty:
        raise UserError(f"corpus: split {split!r} in {path} has no point with a counter")
    base = pairs["theme"] + "/" + pairs["debate"] + "/" + pairs["stance"] + pairs["number"].map("{:02d}".format)
    meta = pairs[key]
    queries = meta.assign(id=base + "a", text=pairs["text_point"])[["id", *key, "text"]]
    cands = meta.assign(id=base + "b", text=pairs["text_counter"])[["id", *key, "text"]]
    return Split(
        name=split,
        queries=queries,
        counters=cands,
        dropped_points=len(points) - len(pairs),
        dropped_counters=len(counters) - len(pairs),
        digest=digest,
    )
