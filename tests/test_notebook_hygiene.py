"""Every notebook starts with the Colab setup cell; committed notebooks carry no outputs;
the table of contents lists exactly the chapters and pages that exist; Colab's versions satisfy
the requirements the setup cell installs."""

from __future__ import annotations

import nbformat
import pytest

from tools.notebooks import (ROOT, book_notebooks, learner_notebooks, repository_url, setup_cell_problems,
                             setup_cell_source, solution_notebooks, stored_output_problems, toc_files)

ALL_NOTEBOOKS = book_notebooks() + learner_notebooks() + solution_notebooks()


def _id(path):
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_id)
def test_first_code_cell_is_the_setup_cell(path):
    assert setup_cell_problems(nbformat.read(path, as_version=4)) == []


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_id)
def test_committed_without_outputs(path):
    assert stored_output_problems(nbformat.read(path, as_version=4)) == []


def test_setup_cell_installs_from_the_configured_repository_without_touching_torch():
    install = " ".join(line for line in setup_cell_source().splitlines() if "pip" in line or "git+" in line)
    assert f"git+{repository_url()}@main" in install
    for forbidden in ("torch", "--upgrade", "-U", "--force-reinstall"):
        assert forbidden not in install.split(), f"the setup cell's pip install mentions {forbidden}"


def test_setup_cell_installs_the_book_extra(monkeypatch):
    """Run the cell with the package 'missing': pip gets exactly `llama-from-scratch[book] @ git+URL@main`."""
    import importlib.util
    import subprocess

    from packaging.requirements import Requirement

    import llama_from_scratch.notebook.setup_cell

    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    monkeypatch.setattr(llama_from_scratch.notebook.setup_cell, "setup", lambda: None)
    exec(setup_cell_source(), {})  # noqa: S102 - our own setup cell
    assert len(calls) == 1 and calls[0][1:5] == ["-m", "pip", "install", "-q"] and len(calls[0]) == 6
    requirement = Requirement(calls[0][5])
    assert (requirement.name, requirement.extras, requirement.url) == (
        "llama-from-scratch", {"book"}, f"git+{repository_url()}@main")


COLAB = {"torch": "2.11.0", "transformers": "5.15.0", "ipywidgets": "7.7.1", "numpy": "2.0.2",
         "matplotlib": "3.10.0", "sentencepiece": "0.2.0", "safetensors": "0.5.3", "tqdm": "4.67.1",
         "pygments": "2.19.1"}


def test_colab_versions_satisfy_the_package_requirements():
    """Colab has Python 3.13, torch 2.11, transformers 5.x, ipywidgets 7.7.1: pip must keep them.

    Checked for what the setup cell installs (the hard requirements and the `book` extra) and
    for the `reference` extra."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"] + extras["book"] + extras["reference"]]
    for name in ("torch", "matplotlib", "ipywidgets", "pygments", "transformers"):
        assert name in {req.name for req in requirements}, f"{name} is not required at all: is the test stale?"
    for req in requirements:
        assert req.name in COLAB, f"{req.name}: add Colab's version to COLAB, so this test checks it"
        assert req.specifier.contains(COLAB[req.name]), f"{req} would replace Colab's {req.name} {COLAB[req.name]}"
    assert Requirement("python" + project["requires-python"]).specifier.contains("3.13")


def test_toc_lists_every_chapter_and_page_and_nothing_else():
    """Every chapter and every .md page in book/ (intro.md, package_map.md, ...) and nothing more."""
    listed = {p.resolve() for p in toc_files()}
    on_disk = {p.resolve() for pattern in ("*.ipynb", "*.md") for p in (ROOT / "book").glob(pattern)}
    assert listed == on_disk


def test_the_checks_can_fail():
    """Deliberately broken notebooks: a missing setup cell and stored outputs are reported."""
    nb = nbformat.read(book_notebooks()[0], as_version=4)
    no_setup = nbformat.from_dict(nb)
    no_setup.cells = [c for c in nb.cells if c.source != setup_cell_source()]
    assert setup_cell_problems(no_setup), "a notebook without its setup cell passed the check"

    edited = nbformat.from_dict(nb)
    first = next(c for c in edited.cells if c.cell_type == "code")
    first.source = first.source.replace("@main", "@some-branch")
    assert setup_cell_problems(edited), "an edited setup cell passed the check"

    with_outputs = nbformat.from_dict(nb)
    cell = next(c for c in with_outputs.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    cell.execution_count = 1
    assert len(stored_output_problems(with_outputs)) == 2
