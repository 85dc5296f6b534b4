"""A run report as one self-contained HTML page: report.md rendered, its images embedded.

The page opens offline and survives being mailed or attached to a ticket on its own: every
local image becomes a base64 ``data:`` URI, the CSS is inline, and there is no script, font or
stylesheet to fetch. Links (e.g. to ``eval/outliers.json``) stay relative to the run folder.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from urllib.parse import unquote, urlparse

from markdown_it import MarkdownIt

from compress.io import write_text

# Neutral greys and black, so that the only colour on the page comes from the plots.
CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       background: #fff; max-width: 72rem; margin: 2rem auto; padding: 0 1.5rem; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 2em; }
a { color: #222; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .88em;
       background: #f0f0f0; padding: 0 .25em; border-radius: 3px; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .3em .7em; }
th, td[style*="right"] { white-space: nowrap; }  /* numbers and headers stay on one line */
th { background: #e8e8e8; text-align: left; }  /* aligned columns override it inline */
tbody tr:nth-child(even) { background: #f5f5f5; }
img { display: block; max-width: 100%; height: auto; margin: 1em 0; }
.missing { color: #555; background: #eee; border: 1px dashed #999; padding: .1em .4em; }
"""


def render_html(markdown_text: str, base_dir: Path, title: str) -> str:
    """A complete HTML page for ``markdown_text``, with images read relative to ``base_dir``.

    Tables follow the markdown's column alignment; an image that is not a local file (missing,
    or remote) shows as a note instead, so one lost plot never stops the report. Raw HTML in the
    markdown is shown as text: it could pull in outside resources, and the stages never write it.

    Example:
        >>> run = Path("runs/demo")
        >>> page = render_html((run / "report.md").read_text(), run, "edgeclip run demo")
    """
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", _render_image)
    md.add_render_rule("table_open", lambda *_: '<div class="table"><table>\n')
    md.add_render_rule("table_close", lambda *_: "</table></div>\n")
    body = md.render(markdown_text, {"base_dir": Path(base_dir)})
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def _render_image(self, tokens, idx, options, env) -> str:
    """markdown-it's image rule, with the ``src`` swapped for the file's bytes as a data URI."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    if src.startswith("data:"):
        return self.image(tokens, idx, options, env)
    uri = _data_uri(src, env["base_dir"])
    if not uri.startswith("data:"):
        return f'<span class="missing">{html.escape(uri)}</span>'
    token.attrSet("src", uri)
    return self.image(tokens, idx, options, env)


def _data_uri(src: str, base_dir: Path) -> str:
    """``data:<mime>;base64,…`` for a local image, else a one-line note saying why not."""
    if urlparse(src).scheme:  # http:, https:, file: …: a fetch when the page opens
        return f"image not embedded (not a local file): {src}"
    path = base_dir / unquote(src)  # markdown-it percent-encodes spaces and non-ASCII
    mime = mimetypes.guess_type(path.name)[0]
    if mime is None or not mime.startswith("image/"):
        return f"image not embedded (not an image file): {src}"
    if not path.is_file():
        return f"image missing: {src}"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def write_html(run_dir: Path, title: str) -> Path:
    """``report.html`` beside the run folder's ``report.md``, written atomically; its path."""
    run_dir = Path(run_dir)
    page = render_html((run_dir / "report.md").read_text(), run_dir, title)
    write_text(run_dir / "report.html", page)
    return run_dir / "report.html"
