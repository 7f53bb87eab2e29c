"""The report's markdown as one self-contained HTML page, rendered by Python-Markdown.

Python-Markdown (the ``markdown`` package, with its ``tables`` extension) does the
rendering. Two things are ours: PNG images are embedded as data URIs, so the file can
be mailed or opened on its own, and raw HTML in the text is shown as text, never
passed through, since dataset and attack names end up in the report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from xml.etree.ElementTree import Element

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}")


class _EmbedPNGs(Treeprocessor):
    def __init__(self, md: markdown.Markdown, base: Path) -> None:
        super().__init__(md)
        self.base = base

    def run(self, root: Element) -> None:
        for img in root.iter("img"):
            path = self.base / img.get("src", "")
            if path.is_file() and path.suffix.lower() == ".png":
                img.set("src", "data:image/png;base64,"
                        + base64.b64encode(path.read_bytes()).decode())


class _SelfContained(Extension):
    """PNGs inline; raw HTML escaped (its block and inline handlers removed)."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the library's name)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_EmbedPNGs(md, self.base), "embed_pngs", 0)


def markdown_to_html(md: str, base: Path, title: str = "report") -> str:
    """``md`` as one HTML page; images are looked up relative to ``base``."""
    body = markdown.markdown(md, extensions=["tables", _SelfContained(Path(base))],
                             output_format="html")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
