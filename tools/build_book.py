"""Build the HTML book: execute every chapter (cached), then run Jupyter Book on the executed copies.

    python -m tools.build_book      # -> _build/html/index.html

Jupyter Book's own execution is off: chapters run through `tools.notebooks.execute_notebook`,
whose cache the tests fill first, so a CI run executes each chapter once. The book is
built from a staging copy of the root (`_build/staged`) with the same layout, so the
Colab and repository links point at the real paths. Sphinx warnings are errors (-W),
and a chapter with a cell that raised stops the build. The scripts the pages run (MathJax,
the widget manager) come from npm through `tools.vendor` and are served by the build itself;
a page that still loads a script from elsewhere stops the build.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from tools import vendor
from tools.notebooks import ROOT, book_notebooks, execute_notebook, toc_files

# A page's <script src=...> that leaves the build (the pages must work offline).
REMOTE_SCRIPT = re.compile(r'<script[^>]*\ssrc="(?:https?:)?//[^"]+"')


def stage(staged: Path) -> None:
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, staged / name)
    vendor.install(staged / "_vendor")  # _config.yml: html_static_path
    for asset in (ROOT / "book").rglob("*"):
        if asset.is_file() and asset.suffix != ".ipynb" and ".ipynb_checkpoints" not in asset.parts:
            target = staged / asset.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(asset, target)
    for path in toc_files():
        if path.suffix == ".ipynb":
            result = execute_notebook(path)
            status = "cached" if result.cached else "executed"
            print(f"{path.relative_to(ROOT)}: {status}, {result.seconds:.1f} s", flush=True)
            if result.errors:
                raise SystemExit(f"{path.relative_to(ROOT)} raised:\n  " + "\n  ".join(result.errors))
            target = staged / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(result.notebook, target)


def remote_scripts(html: Path) -> list[str]:
    """'page: <script src=...>' for every script a built page loads from outside the build."""
    found = []
    for page in sorted(html.rglob("*.html")):
        if "_static" in page.relative_to(html).parts:
            continue
        for match in REMOTE_SCRIPT.finditer(page.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{page.relative_to(html)}: {match.group(0)}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT), help="build into OUT/_build (default: the repository root)")
    out = Path(parser.parse_args(argv).out).resolve()
    start = time.perf_counter()
    print(f"executing {len(book_notebooks())} chapters", flush=True)
    staged = out / "_build" / "staged"
    stage(staged)
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    # The jupyter-book beside this interpreter (the project's .venv), else one on PATH.
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb is None:
        raise SystemExit("jupyter-book is not installed: run `make book`, which installs requirements.txt")
    command = [jb, "build", str(staged), "--path-output", str(out), "--builder", "html", "-W", "-n", "--keep-going"]
    # tools/ importable by Sphinx: _config.yml loads the extension tools.sphinx_fixes.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": path})
    index = html / "index.html"
    if not index.exists():
        raise SystemExit(f"the build finished but {index} is missing")
    remote = remote_scripts(html)
    if remote:
        raise SystemExit("pages load scripts from the network (they must come from tools/vendor.py):\n  "
                         + "\n  ".join(remote))
    print(f"book built in {time.perf_counter() - start:.0f} s: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
