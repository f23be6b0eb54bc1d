"""pyproject.toml's requirements are what the code imports (scanned with ast, each import name mapped
to its distribution by the installed packages' own metadata):

- hard requirements = what the package imports outside llama_from_scratch/notebook/, but for
- the `reference` extra (transformers), which the package imports only inside functions;
- the `book` extra = what notebook/, the chapters and the exercises import beyond the hard ones;
- the `dev` extra covers what tests/, tools/ and benchmarks/ import;
- requirements.txt pins every one of them exactly (it is what `make` installs)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.notebooks import ROOT, book_notebooks, learner_notebooks, solution_notebooks

PACKAGE = ROOT / "llama_from_scratch"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Imported by notebooks but never installed by pip for them: the kernel running a notebook is
# IPython, and google.colab exists only on Colab (setup_cell.py imports it there, guarded).
PROVIDED = {"IPython", "google"}
LOCAL = {"llama_from_scratch", "tools", "tests", "benchmarks"} | {
    p.stem for folder in ("tests", "benchmarks") for p in (ROOT / folder).glob("*.py")}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


HARD = names(PROJECT["dependencies"])
EXTRAS = {extra: names(reqs) for extra, reqs in PROJECT["optional-dependencies"].items()}


def scan(source: str) -> tuple[set[str], set[str]]:
    """(names imported at module level, names imported inside a function): top-level names only,
    standard library and local modules left out. `x.numpy()` counts as a module-level numpy import:
    torch's Tensor.numpy needs numpy installed although nothing imports it."""
    top, lazy = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        found = []
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found = [node.module]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "numpy" and not node.args):
            top.add("numpy")
        for name in found:
            (lazy if in_function else top).add(name.split(".")[0])
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(ast.parse(source), False)
    keep = lambda found: {n for n in found if n not in sys.stdlib_module_names and n not in LOCAL}  # noqa: E731
    return keep(top), keep(lazy)


def distributions(import_names: set[str]) -> set[str]:
    """The installed distributions providing these import names (pyyaml for `yaml`, ...)."""
    known = packages_distributions()
    out = set()
    for name in import_names - PROVIDED:
        if name not in known:
            raise LookupError(f"no installed distribution provides `import {name}`: install it, or add it to "
                              "PROVIDED in this test with the reason it needs no requirement")
        out |= {canonicalize_name(d) for d in known[name]}
    return out


def files_imports(paths: list[Path]) -> tuple[set[str], set[str]]:
    top, lazy = set(), set()
    for path in paths:
        t, z = scan(path.read_text())
        top, lazy = top | t, lazy | z
    return top, lazy


def notebook_imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
                top, lazy = scan("\n".join(lines))
                found |= top | lazy
    return found


PACKAGE_FILES = sorted(PACKAGE.rglob("*.py"))
NOTEBOOK_HELPERS = [p for p in PACKAGE_FILES if (PACKAGE / "notebook") in p.parents]
MODEL_CODE = [p for p in PACKAGE_FILES if p not in NOTEBOOK_HELPERS]


def test_hard_requirements_are_exactly_what_the_package_imports():
    top, lazy = files_imports(MODEL_CODE)
    assert HARD == distributions(top | lazy) - EXTRAS["reference"]


def test_the_reference_extra_is_imported_lazily_only():
    """transformers is imported inside functions only, so the package imports without it."""
    top, lazy = files_imports(MODEL_CODE)
    assert not distributions(top) & EXTRAS["reference"]
    assert EXTRAS["reference"] <= distributions(lazy), "the reference extra holds what nothing imports"


def test_book_extra_is_what_the_notebooks_and_their_helpers_import():
    top, lazy = files_imports(NOTEBOOK_HELPERS)
    notebooks = book_notebooks() + solution_notebooks() + learner_notebooks()
    assert EXTRAS["book"] == distributions(top | lazy | notebook_imports(notebooks)) - HARD


def test_sentencepiece_is_for_the_chapters_and_tests_not_the_package():
    assert "sentencepiece" not in HARD
    assert "sentencepiece" in EXTRAS["book"] and "sentencepiece" in EXTRAS["dev"]


def test_dev_extra_covers_tests_tools_and_benchmarks():
    paths = [p for folder in ("tests", "tools", "benchmarks") for p in sorted((ROOT / folder).glob("*.py"))]
    top, lazy = files_imports(paths)
    missing = distributions(top | lazy) - HARD - EXTRAS["dev"]
    assert not missing, f"tests/tools/benchmarks import {sorted(missing)}: add them to the dev extra"


def test_requirements_txt_pins_every_requirement_exactly():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            assert str(req.specifier).startswith("=="), f"requirements.txt: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = req
    everything = PROJECT["dependencies"] + [r for reqs in PROJECT["optional-dependencies"].values() for r in reqs]
    for text in everything:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is required by pyproject.toml but not pinned in requirements.txt"
        version = str(pin.specifier)[2:]
        assert req.specifier.contains(version, prereleases=True), f"requirements.txt's {pin} does not satisfy {req}"


def test_the_scan_can_fail():
    """A module importing something new, lazily or not, changes what the checks above compare."""
    top, lazy = scan("import os\nimport torch.nn as nn\nfrom tqdm.auto import tqdm\n"
                     "from . import sibling\nfrom llama_from_scratch.model import config\n"
                     "class A:\n    import safetensors\n"
                     "def f(t):\n    import transformers\n    return t.numpy()\n")
    assert (top, lazy) == ({"torch", "tqdm", "safetensors", "numpy"}, {"transformers"})
    assert distributions({"yaml", "torch"}) == {"pyyaml", "torch"}
    assert distributions(top | lazy | {"matplotlib"}) - EXTRAS["reference"] != HARD
    with pytest.raises(LookupError, match="no installed distribution provides `import not_a_real_package`"):
        distributions({"not_a_real_package"})
