"""What every rote page and table shares: escaping, tables, embedded figures, number formats, the
page skeleton and its style. Pure: no torch.

The run report, the study report and the probe section are HTML pages or sections built from these
helpers; the injection card (markdown) shares the number format.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from rote.fileio import write_text

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1050px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
table.text td { white-space: pre-wrap; }  /* generations: keep their spaces and line breaks visible */
tr.group td { border-top: 2px solid #bbb; }
tr.warn td { background: #fdecea; } p.warn { color: #b03a2e; }
.meta { color: #666; } .note { color: #555; font-size: 13px; }
.callout { border-left: 4px solid #dd8452; background: #fdf6f0; padding: .5em 1em; margin: 1em 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; } code { background: #f2f2f2; padding: 0 3px; }
"""


def e(value) -> str:
    """`value` as escaped HTML text."""
    return html.escape(str(value))


def fmt(value, digits: int = 2, missing: str = "-") -> str:
    """A number with `digits` decimals; `missing` for None."""
    return missing if value is None else f"{value:.{digits}f}"


def table(header: list, body: list[list], row_classes: list[str] | None = None, cls: str = "",
          raw: bool = False) -> str:
    """An HTML table. Every cell is escaped here, so callers pass plain values; with `raw`, body
    cells are HTML already (the caller escaped what needs it)."""
    out = [f'<table class="{cls}">' if cls else "<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(body):
        row_cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{row_cls}>" + "".join(f"<td>{c if raw else e(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def img(path: str | Path, alt: str) -> str:
    """An <img> with the PNG at `path` embedded (data: URI), so the page stands alone."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'


def write_page(path: str | Path, title: str, sections: list[str], css: str = "") -> Path:
    """A whole self-contained page (the shared style plus `css`), written atomically."""
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
                      f"<style>{CSS}{css}</style></head><body>", *[s for s in sections if s], "</body></html>"])
    return write_text(path, page)
