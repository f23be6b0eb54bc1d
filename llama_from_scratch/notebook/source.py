"""Show the package's own source in a notebook, highlighted, in Jupyter and in the built book.

Chapters never paste package code into cells: they call `show_source(obj)`, so what a
reader sees is exactly what runs.

Chapter: warmup.
"""

from __future__ import annotations

import html
import inspect
import textwrap
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class Source:
    """The source of a function, class or module, with where it lives.

    Displays as highlighted HTML in notebooks and in the Jupyter Book build (inline
    styles, so no stylesheet is needed) and as plain text elsewhere.
    """

    def __init__(self, obj: object) -> None:
        obj = inspect.unwrap(obj)  # a decorated function (e.g. @torch.no_grad()): its own source and file
        lines, start = inspect.getsourcelines(obj)
        self.code = textwrap.dedent("".join(lines))
        self.first_line = max(start, 1)  # getsourcelines gives 0 for a whole module
        self.last_line = self.first_line + len(lines) - 1
        file = Path(inspect.getsourcefile(obj) or "?").resolve()
        try:
            self.file = file.relative_to(PACKAGE_ROOT.parent).as_posix()
        except ValueError:
            self.file = file.name

    @property
    def caption(self) -> str:
        return f"{self.file}, lines {self.first_line}-{self.last_line}"

    def __repr__(self) -> str:
        return f"# {self.caption}\n{self.code}"

    def _repr_html_(self) -> str:
        formatter = HtmlFormatter(noclasses=True, style="friendly", nobackground=True)
        body = highlight(self.code, PythonLexer(), formatter)
        return (
            '<div style="border:1px solid #d0d7de;border-radius:6px;margin:0.5em 0;overflow:auto">'
            '<div style="background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:2px 10px;'
            'font-family:monospace;font-size:85%;color:#57606a">'
            f"{html.escape(self.caption)}</div>"
            f'<div style="padding:0 10px;font-size:90%">{body}</div></div>'
        )


def show_source(obj: object) -> Source:
    """Return `obj`'s source for display: put it last in a cell, or pass it to `display`."""
    return Source(obj)
