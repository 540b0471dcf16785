"""Rendering the report from its sections with Jinja2 templates (`templates/`): Markdown with PNG figures
beside it, and one self-contained, autoescaped HTML file."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import jinja2


@dataclass
class Table:
    """A simple table: header, rows of cell strings, which cells are bold, and which link somewhere."""

    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) → URL


@dataclass
class Section:
    """A titled section: a short "how to read this", then paragraphs, tables, figures and notes."""

    title: str
    how_to_read: str = ""
    blocks: list[tuple[str, object]] = field(default_factory=list)  # ("p"|"table"|"figure"|"pre"|"list", payload)

    def p(self, text: str) -> Section:
        self.blocks.append(("p", text))
        return self

    def paragraphs(self, text: str) -> Section:
        """One paragraph per blank-line-separated part of `text` (a verdict: its plain reading first)."""
        for part in text.split("\n\n"):
            self.p(part)
        return self

    def table(self, table: Table) -> Section:
        self.blocks.append(("table", table))
        return self

    def figure(self, name: str, caption: str) -> Section:
        self.blocks.append(("figure", (name, caption)))
        return self

    def pre(self, text: str) -> Section:
        self.blocks.append(("pre", text))
        return self

    def items(self, lines: list[str]) -> Section:
        self.blocks.append(("list", lines))
        return self


def _environment(html: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ablation.report", "templates"),
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def to_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are referenced as PNG files in the same folder."""
    return _environment(html=False).get_template("report.md.j2").render(title=title, sections=sections)


def to_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """The report as one HTML file (autoescaped) with every figure embedded as a data URI."""
    encoded = {name: base64.b64encode(data).decode() for name, data in images.items()}
    return _environment(html=True).get_template("report.html.j2").render(title=title, sections=sections, images=encoded)
