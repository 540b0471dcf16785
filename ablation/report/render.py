"""Rendering the report as Markdown (PNG figures beside it) and as one self-contained HTML file."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Table:
    """A simple table: header, rows of cell strings, and which cells are bold."""

    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)


@dataclass
class Section:
    """A titled section: a short "how to read this", then paragraphs, tables, figures and notes."""

    title: str
    how_to_read: str = ""
    blocks: list[tuple[str, object]] = field(default_factory=list)  # ("p"|"table"|"figure"|"pre"|"list", payload)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def table(self, table: Table) -> "Section":
        self.blocks.append(("table", table))
        return self

    def figure(self, name: str, caption: str) -> "Section":
        self.blocks.append(("figure", (name, caption)))
        return self

    def pre(self, text: str) -> "Section":
        self.blocks.append(("pre", text))
        return self

    def items(self, lines: list[str]) -> "Section":
        self.blocks.append(("list", lines))
        return self


def _md_table(t: Table) -> str:
    def cell(r: int, c: int, v: str) -> str:
        return f"**{v}**" if (r, c) in t.bold else v

    lines = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(cell(r, c, v) for c, v in enumerate(row)) + " |" for r, row in enumerate(t.rows)]
    return "\n".join(lines)


def to_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are referenced as PNG files in the same folder."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.how_to_read:
            out += [f"*How to read this:* {s.how_to_read}", ""]
        for kind, payload in s.blocks:
            if kind == "p":
                out += [str(payload), ""]
            elif kind == "table":
                out += [_md_table(payload), ""]  # type: ignore[arg-type]
            elif kind == "figure":
                name, caption = payload  # type: ignore[misc]
                out += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            elif kind == "pre":
                out += ["```", str(payload).rstrip(), "```", ""]
            elif kind == "list":
                out += [f"- {line}" for line in payload] + [""]  # type: ignore[union-attr]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.8em}th,td{border:1px solid #ccc;padding:.25em .4em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.how{color:#555;font-style:italic}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:28em}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for r, row in enumerate(t.rows):
        cells = [f"<td>{'<b>' + html.escape(v) + '</b>' if (r, c) in t.bold else html.escape(v)}</td>" for c, v in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(title: str, sections: list[Section], images: dict[str, bytes]) -> str:
    """The report as one HTML file with every figure embedded as a data URI."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.how_to_read:
            out.append(f"<p class='how'>How to read this: {html.escape(s.how_to_read)}</p>")
        for kind, payload in s.blocks:
            if kind == "p":
                out.append(f"<p>{html.escape(str(payload))}</p>")
            elif kind == "table":
                out.append(_html_table(payload))  # type: ignore[arg-type]
            elif kind == "figure":
                name, caption = payload  # type: ignore[misc]
                data = base64.b64encode(images[name]).decode()
                out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            elif kind == "pre":
                out.append(f"<details><summary>show</summary><pre>{html.escape(str(payload))}</pre></details>")
            elif kind == "list":
                out.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in payload) + "</ul>")  # type: ignore[union-attr]
    out.append("</body></html>")
    return "\n".join(out)
