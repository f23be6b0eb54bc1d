"""Build the HTML book: execute every chapter (cached), then run Jupyter Book on the executed copies.

    python -m tools.build_book      # -> _build/html/index.html

Jupyter Book's own execution is off: chapters run through `tools.notebooks.execute_notebook`,
whose cache the tests fill first, so a CI run executes each chapter once. The book is
built from a staging copy of the root (`_build/staged`) with the same layout, so the
Colab and repository links point at the real paths. Sphinx warnings are errors (-W),
and a chapter with a cell that raised stops the build.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from tools.notebooks import ROOT, book_notebooks, execute_notebook, toc_files


def stage(staged: Path) -> None:
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, staged / name)
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
    subprocess.run(command, check=True)
    index = html / "index.html"
    if not index.exists():
        raise SystemExit(f"the build finished but {index} is missing")
    print(f"book built in {time.perf_counter() - start:.0f} s: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
