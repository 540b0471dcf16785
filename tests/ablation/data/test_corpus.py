"""Corpus reading: pairing, subsets, zip input and the one-line errors for bad corpora."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ablation.data.corpus import read_split, resolve_corpus
from ablation.errors import UserError
from tests.conftest import make_corpus


def _zip(src: Path, dest: Path, prefix: str = "arguana/") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(src).as_posix())
    return dest


def test_pairs_are_aligned_and_orphans_counted(corpus: Path) -> None:
    split = read_split(corpus, "test")
    assert split.n == 2 * 2 * 2 * 3 + 2 * 3  # and the cross-listed debate again under the other theme
    assert split.dropped_points == 3 and split.dropped_counters == 0  # its orphan point is listed twice too
    for q, c in zip(split.queries["id"], split.counters["id"], strict=True):
        assert q[:-1] == c[:-1] and q.endswith("a") and c.endswith("b")
    assert split.candidate_ids[: split.n] == list(split.counters["id"])
    assert split.candidate_ids[split.n :] == list(split.queries["id"])


def test_subset_by_themes_and_debates(corpus: Path) -> None:
    split = read_split(corpus, "training", themes=["health"], max_debates_per_theme=1)
    assert set(split.queries["theme"]) == {"health"}
    assert split.queries["debate"].nunique() == 1
    with pytest.raises(UserError, match=r"no such theme.*sport"):
        read_split(corpus, "training", themes=["sport"])


def test_zip_reads_the_same_as_the_folder(corpus: Path, tmp_path: Path) -> None:
    z = _zip(corpus, tmp_path / "c.zip")
    a, b = read_split(corpus, "validation"), read_split(z, "validation")
    assert list(a.queries["text"]) == list(b.queries["text"])
    assert a.digest == b.digest


def test_zip_slip_is_rejected(corpus: Path, tmp_path: Path) -> None:
    z = _zip(corpus, tmp_path / "c.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(UserError, match="unsafe path"):
        read_split(z, "test")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("pro01x-point.txt", b"text", "does not match"),
        ("con01a-point.txt", b"text", "does not match"),  # a con file inside a pro folder
        ("pro07a-point.txt", b"   \n", "empty text"),
        ("pro08a-point.txt", b"\xff\xfe bad", "not valid UTF-8"),
    ],
)
def test_bad_files_are_named(corpus: Path, name: str, content: bytes, message: str) -> None:
    folder = next((corpus / "test").glob("*/*/pro"))
    (folder / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_split(corpus, "test")
    assert name in str(info.value)


def test_missing_path_and_split(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(UserError, match="no such file or directory"):
        read_split(tmp_path / "nope", "test")
    with pytest.raises(UserError, match="no such split"):
        read_split(corpus, "dev")
    only_test = make_corpus(tmp_path / "c2", splits=("test",))
    with pytest.raises(UserError, match="split 'training' not found"):
        read_split(only_test, "training")


def test_resolve_corpus_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGUANA_DIR", "/env/path")
    assert resolve_corpus("/cli", "/cfg") == Path("/cli")
    assert resolve_corpus(None, "/cfg") == Path("/cfg")
    assert resolve_corpus(None, None) == Path("/env/path")
    monkeypatch.delenv("ARGUANA_DIR")
    assert resolve_corpus(None, None).parts[-2:] == ("data", "arguana-counterargs")
