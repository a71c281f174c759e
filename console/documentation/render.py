"""The pack as bytes: canonical JSON, a self-contained HTML page and a PDF (fpdf2).

Each renderer is a pure function of the pack: keys sorted, no clock read, no random identifier,
so the same pack always gives the same bytes. The PDF's creation date is the recorded time of
the audit event the pack was built from, and fpdf2 derives the file identifier from the content.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any

from fpdf import FPDF

from .pack import SECTION_TITLES

FORMATS = ("json", "html", "pdf")
MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}


def _order(pack: dict[str, Any]) -> list[str]:
    return ["document", *sorted(k for k in pack if k != "document")]


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


# --- JSON ------------------------------------------------------------------------------------


def to_json(pack: dict[str, Any]) -> bytes:
    return (
        json.dumps(pack, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"
    ).encode()


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1b1b1b}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:2px solid #444;font-size:1.25rem}
table{border-collapse:collapse;margin:.3rem 0;width:100%}
th,td{border:1px solid #bbb;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600;width:14rem}
td{overflow-wrap:anywhere}.item{margin:.6rem 0 .9rem}.item>b{display:block;margin-bottom:.15rem}
table.grid th{width:auto}
"""


def _html(value: Any) -> str:
    if _is_scalar(value):
        return escape(_scalar(value)).replace("\n", "<br>")
    if isinstance(value, dict):
        if not value:
            return "-"
        rows = "".join(
            f"<tr><th>{escape(_label(k))}</th><td>{_html(value[k])}</td></tr>"
            for k in sorted(value, key=str)
        )
        return f"<table>{rows}</table>"
    if not value:
        return "none"
    if all(_is_scalar(v) for v in value):
        return escape(", ".join(_scalar(v) for v in value))
    if all(isinstance(v, dict) and all(_is_scalar(x) for x in v.values()) for v in value):
        columns = sorted({k for v in value for k in v}, key=str)
        head = "".join(f"<th>{escape(_label(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_html(v.get(c))}</td>" for c in columns) + "</tr>"
            for v in value
        )
        return f'<table class="grid"><tr>{head}</tr>{body}</table>'
    return "".join(
        f'<div class="item"><b>{i}.</b>{_html(v)}</div>' for i, v in enumerate(value, start=1)
    )


def to_html(pack: dict[str, Any]) -> bytes:
    doc = pack["document"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(doc['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(doc['title'])}</h1>",
        f"<p>{escape(doc['regulation'])}. Built from audit event "
        f"{doc['built_from']['audit_seq']} ({escape(doc['built_from']['audit_hash'])}).</p>",
    ]
    for key in _order(pack):
        title = SECTION_TITLES.get(key, _label(key))
        parts.append(f'<section id="{escape(key)}"><h2>{escape(title)}</h2>')
        parts.append(_html(pack[key]))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode()


# --- PDF -------------------------------------------------------------------------------------

# The core fonts are Latin-1: common typography is mapped, anything else becomes '?'.
_PLAIN = str.maketrans(
    {"\u2014": "-", "\u2013": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
     "\u2026": "...", "\u2264": "<=", "\u2265": ">=", "\u2192": "->", "\u2212": "-"}
)  # fmt: skip


def _latin(text: str) -> str:
    return text.translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


class _Document(FPDF):
    footer_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", size=7)
        self.cell(0, 5, _latin(f"{self.footer_text} - page {self.page_no()}"), align="C")


class _PdfWriter:
    INDENT = 4.0
    LINE = 4.2

    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf

    def text(self, depth: int, text: str, *, bold: bool = False) -> None:
        pdf = self.pdf
        pdf.set_font("helvetica", "B" if bold else "", 8.5)
        pdf.set_x(pdf.l_margin + self.INDENT * min(depth, 8))
        pdf.multi_cell(0, self.LINE, _latin(text), new_x="LMARGIN", new_y="NEXT")

    def value(self, depth: int, label: str, value: Any) -> None:
        if _is_scalar(value):
            self.text(depth, f"{label}: {_scalar(value)}" if label else _scalar(value))
        elif isinstance(value, dict):
            if label:
                self.text(depth, label if value else f"{label}: -", bold=True)
            for key in sorted(value, key=str):
                self.value(depth + (1 if label else 0), _label(key), value[key])
        elif not value or all(_is_scalar(v) for v in value):
            text = ", ".join(_scalar(v) for v in value) if value else "none"
            self.text(depth, f"{label}: {text}" if label else text)
        else:
            if label:
                self.text(depth, label, bold=True)
            for i, item in enumerate(value, start=1):
                self.value(depth + 1, f"{i}.", item)


def to_pdf(pack: dict[str, Any]) -> bytes:
    doc = pack["document"]
    built = doc["built_from"]
    pdf = _Document(format="A4")
    pdf.footer_text = (
        f"{doc['model']} {doc['version']} - audit seq {built['audit_seq']} {built['audit_hash']}"
    )
    pdf.set_creation_date(datetime.fromisoformat(built["audit_recorded_at"]))
    pdf.set_title(_latin(doc["title"]))
    pdf.set_subject(_latin(doc["regulation"]))
    pdf.set_creator("model-governance documentation pack")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_margins(15, 15, 15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 15)
    pdf.multi_cell(0, 8, _latin(doc["title"]), new_x="LMARGIN", new_y="NEXT")
    writer = _PdfWriter(pdf)
    for key in _order(pack):
        pdf.ln(3)
        pdf.set_font("helvetica", "B", 12)
        pdf.multi_cell(
            0, 6, _latin(SECTION_TITLES.get(key, _label(key))), new_x="LMARGIN", new_y="NEXT"
        )
        writer.value(0, "", pack[key])
    return bytes(pdf.output())


def render(pack: dict[str, Any], fmt: str) -> bytes:
    return {"json": to_json, "html": to_html, "pdf": to_pdf}[fmt](pack)
