"""The graded exercises: generated from their solutions, solutions pass, learner graders fail.

Grading runs exactly as a learner runs it, `pytest --nbval-lax`, once for all exercise
notebooks (a session fixture), then each notebook's per-cell outcomes are checked.
"""

from __future__ import annotations

import nbformat
import pytest

from tools.exercises import (grading_problems, learner_notebook, learner_path, render, run_nbval,
                             stale_learner_notebooks, strip_solutions)
from tools.notebooks import ROOT, solution_notebooks

SOLUTIONS = solution_notebooks()


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    paths = SOLUTIONS + [learner_path(p) for p in SOLUTIONS]
    return run_nbval(paths, ROOT, tmp_path_factory.mktemp("nbval") / "junit.xml")


def test_there_are_exercises():
    assert SOLUTIONS, "no solution notebooks in exercises/solutions"


def test_learner_notebooks_are_up_to_date():
    stale = stale_learner_notebooks()
    assert not stale, f"regenerate with `python -m tools.exercises`: {[str(p.relative_to(ROOT)) for p in stale]}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_solution_passes_every_grader(solution, graded):
    assert grading_problems(nbformat.read(solution, as_version=4), graded[solution], learner=False) == []


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_learner_notebook_fails_every_grader(solution, graded):
    learner = learner_path(solution)
    assert grading_problems(nbformat.read(learner, as_version=4), graded[learner], learner=True) == []


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_learner_notebook_shows_no_solution(solution):
    text = learner_path(solution).read_text()
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text


def test_strip_solutions_keeps_indentation_and_rejects_broken_markers():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\nprint(1)"
    assert strip_solutions(source) == 'def f(x):\n    raise NotImplementedError("Replace this line with your code.")\nprint(1)'
    for broken in ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"]:
        with pytest.raises(ValueError):
            strip_solutions(broken)


def test_the_grading_checks_can_fail(tmp_path):
    """Deliberately broken exercises are caught: a stale learner copy, a grader that passes
    with the stubs (it checks nothing), and a solution that fails its own grader."""
    solution = nbformat.read(SOLUTIONS[0], as_version=4)

    stale_dir = tmp_path / "stale" / "solutions"
    stale_dir.mkdir(parents=True)
    nbformat.write(solution, stale_dir / "00_x.ipynb")
    (stale_dir.parent / "00_x.ipynb").write_text(render(learner_notebook(solution)) + "# edited by hand\n")
    assert stale_learner_notebooks([stale_dir / "00_x.ipynb"]) == [stale_dir.parent / "00_x.ipynb"]

    toothless = nbformat.from_dict(solution)
    toothless.cells.append(nbformat.v4.new_code_cell("# Grader: checks nothing\nprint('all good')"))
    wrong = nbformat.from_dict(solution)
    wrong.cells.append(nbformat.v4.new_code_cell("# Grader: impossible\nassert 1 == 2, 'never true'"))
    (tmp_path / "solutions").mkdir()
    paths = []
    for name, nb in [("toothless", toothless), ("wrong", wrong)]:
        nbformat.write(nb, tmp_path / "solutions" / f"{name}.ipynb")
        nbformat.write(learner_notebook(nb), tmp_path / f"{name}.ipynb")
        paths += [tmp_path / "solutions" / f"{name}.ipynb", tmp_path / f"{name}.ipynb"]
    outcomes = run_nbval(paths, tmp_path, tmp_path / "junit.xml")

    toothless_learner = grading_problems(toothless, outcomes[tmp_path / "toothless.ipynb"], learner=True)
    assert any("passes with the stubs" in p for p in toothless_learner), toothless_learner
    wrong_solution = grading_problems(wrong, outcomes[tmp_path / "solutions" / "wrong.ipynb"], learner=False)
    assert any("fails" in p for p in wrong_solution), wrong_solution
