"""A Sphinx extension for the book's build: fixes in the generated pages that no setting reaches.

Sphinx 7.4 lists an inline script (a `body`, no file) added after the builder started twice:
once as registered (file None) and once re-read from the registry (file ''), and so every page
declared sphinx-thebe's `const THEBE_JS_URL` twice, a SyntaxError in the reader's console.
This keeps the first of equal inline scripts. Not handled: equal scripts with different
attributes (they are different scripts).
"""

from __future__ import annotations

from typing import Any


def drop_repeated_inline_scripts(app: Any, pagename: str, templatename: str, context: dict,
                                 doctree: Any) -> None:  # noqa: ARG001 - Sphinx's event signature
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, keep = set(), []
    for script in scripts:
        if not script.filename:  # an inline script: the same body and attributes is the same script
            key = tuple(sorted((k, str(v)) for k, v in script.attributes.items()))
            if key in seen:
                continue
            seen.add(key)
        keep.append(script)
    scripts[:] = keep  # the builder's own list: it restores it before the next page


def setup(app: Any) -> dict:  # a sphinx.application.Sphinx
    app.connect("html-page-context", drop_repeated_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
