"""Find, check and execute the project's notebooks.

Every chapter is executed once per CI run: the tests execute it through
`execute_notebook`, which keeps the executed copy in `_build/executed/`, keyed by a
hash of the notebook and of the package's source; `make book` then builds the HTML
from those copies (Jupyter Book's own execution is off). Change the notebook or the
package and the key changes, so a stale copy is never used.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "_build" / "executed"
CELL_TIMEOUT_S = 600


def _repository() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]


def repository_url() -> str:
    return _repository()["url"]


def setup_cell_source() -> str:
    """The first code cell of every notebook: makes it run on Colab as well as locally."""
    repo = _repository()
    # The `book` extra adds what the chapters import (plots, widgets, sentencepiece, transformers);
    # every line stays within the 95 characters a rendered cell shows.
    return (
        "# Setup: installs the book's package and what the chapters use when it is missing (as on\n"
        "# Colab, whose torch is kept), then seeds everything, sets the figure style and the data\n"
        "# folder. Safe to re-run.\n"
        "import importlib, importlib.util, subprocess, sys\n"
        'if importlib.util.find_spec("llama_from_scratch") is None:\n'
        f'    url = "git+{repo["url"]}@{repo["branch"]}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
        '                    f"llama-from-scratch[book] @ {url}"], check=True)\n'
        "    importlib.invalidate_caches()\n"
        "from llama_from_scratch.notebook.setup_cell import setup\n"
        "setup()"
    )


def toc_files() -> list[Path]:
    """Every file listed in `_toc.yml`, in reading order (with its suffix resolved)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                names.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key, []))

    walk(toc.get("chapters", []) + toc.get("parts", []))
    paths = []
    for name in names:
        matches = [ROOT / f"{name}{suffix}" for suffix in (".ipynb", ".md") if (ROOT / f"{name}{suffix}").exists()]
        if not matches:
            raise FileNotFoundError(f"_toc.yml lists {name!r}, but neither {name}.ipynb nor {name}.md exists")
        paths.append(matches[0])
    return paths


def book_notebooks() -> list[Path]:
    return [p for p in toc_files() if p.suffix == ".ipynb"]


def solution_notebooks() -> list[Path]:
    return sorted((ROOT / "exercises" / "solutions").glob("*.ipynb"))


def learner_notebooks() -> list[Path]:
    return sorted((ROOT / "exercises").glob("*.ipynb"))


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def setup_cell_problems(nb: nbformat.NotebookNode) -> list[str]:
    cells = code_cells(nb)
    if not cells:
        return ["it has no code cell, so no setup cell"]
    if cells[0].source != setup_cell_source():
        return ["its first code cell is not the standard setup cell (see tools/notebooks.py: setup_cell_source)"]
    return []


def stored_output_problems(nb: nbformat.NotebookNode) -> list[str]:
    problems = []
    for i, cell in enumerate(code_cells(nb)):
        if cell.get("outputs"):
            problems.append(f"code cell {i} has stored outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"code cell {i} has an execution count")
    if "widgets" in nb.metadata:
        problems.append("the notebook stores widget state in its metadata")
    return problems


def error_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """One line per code cell that raised: 'cell N: Name: message'."""
    found = []
    for i, cell in enumerate(code_cells(nb)):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
    return found


def _cache_key(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted((ROOT / "llama_from_scratch").rglob("*.py")):
        digest.update(source.relative_to(ROOT).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


@dataclass
class Execution:
    path: Path  # the source notebook
    notebook: nbformat.NotebookNode  # executed
    seconds: float
    cached: bool
    errors: list[str] = field(default_factory=list)


TIMINGS: dict[str, Execution] = {}  # filled as notebooks execute; reported by tests/conftest.py


def executed_path(path: Path) -> Path:
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:  # a notebook outside the project (tests' fixtures in tmp dirs)
        relative = Path("outside") / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16] / path.name
    return EXECUTED / relative


def execute_notebook(path: Path, use_cache: bool = True) -> Execution:
    """Execute `path` top to bottom in a fresh kernel (cwd = its folder) and return the result.

    Errors do not stop execution; they are listed in `Execution.errors`. Only an
    error-free run is cached.
    """
    from nbclient import NotebookClient

    path = Path(path)
    key = _cache_key(path)
    out = executed_path(path)
    meta = out.with_suffix(".json")
    if use_cache and meta.exists() and out.exists():
        info = json.loads(meta.read_text())
        if info.get("key") == key:
            result = Execution(path, nbformat.read(out, as_version=4), info["seconds"], cached=True)
            TIMINGS[str(path)] = result
            return result
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        copy.deepcopy(nb), timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
        store_widget_state=True, resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    executed = client.execute()
    seconds = time.perf_counter() - start
    result = Execution(path, executed, seconds, cached=False, errors=error_outputs(executed))
    if not result.errors:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(executed, out)
        meta.write_text(json.dumps({"key": key, "seconds": seconds}))
    TIMINGS[str(path)] = result
    return result
