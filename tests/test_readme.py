"""The README and docs/ say what is true today: every experiment is listed, every `make` target they name
exists, every link leads somewhere, and the README stays short."""

from __future__ import annotations

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (REPO / "docs").glob("*.md")}


def _targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def test_every_experiment_is_listed_and_every_listed_one_exists() -> None:
    files = {p.name for p in (REPO / "experiments").glob("*.yaml")}
    listed = set(re.findall(r"`([a-z_-]+\.yaml)`", README.split("## Experiments", 1)[1].split("##", 1)[0]))
    assert files == listed


def test_every_make_target_named_exists_and_has_help() -> None:
    targets = _targets()
    for name, text in {"README.md": README, **DOCS}.items():
        named = set(re.findall(r"`make ([a-z-]+)", text))
        assert named <= targets, (name, named - targets)
    helped = set(re.findall(r"^([a-zA-Z_-]+):.*## ", (REPO / "Makefile").read_text(), re.MULTILINE))
    assert targets - {"$(VENV)/.installed"} <= helped | {"help"}


def test_links_lead_somewhere_and_the_readme_fits_a_few_screens() -> None:
    for name, text in {"README.md": README, **DOCS}.items():
        base = REPO if name == "README.md" else REPO / "docs"
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith("http"):
                assert (base / target).exists(), (name, target)
    assert len(README.splitlines()) <= 160
