"""The graded exercises: generated from their solutions, solutions pass, learner graders fail.

Grading runs exactly as a learner runs it, `pytest --nbval-lax`, once for all exercise
notebooks (a session fixture), then each notebook's per-cell outcomes are checked.
"""

from __future__ import annotations

import re

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


TASK = re.compile(r"## \d+\. ")  # a task's markdown cell starts "## 3. Title"
HINT = re.compile(r"<details><summary>Hint")
SKETCH = re.compile(r"<details><summary>[^<]*answer sketch", re.IGNORECASE)


def structure_problems(nb: nbformat.NotebookNode) -> list[str]:
    """What a notebook lacks (issue 14): a folded hint under every task but the stretch task,
    which is the last task, has no hint and says so; and an open question with a folded
    answer sketch. Tasks with nothing to write are left alone."""
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    tasks = [s for s in markdown if TASK.match(s) and "Nothing to write" not in s]
    stretch = [s for s in tasks if "Stretch" in s.split("\n")[0]]
    problems = []
    if len(stretch) != 1:
        problems.append(f"{len(stretch)} stretch tasks (a heading with 'Stretch'), expected 1")
    elif tasks[-1] is not stretch[0]:
        problems.append("the stretch task is not the last task")
    for task in tasks:
        title = task.split("\n")[0]
        if task in stretch:
            if HINT.search(task) or "no hints" not in task:
                problems.append(f"{title}: a stretch task has no hints, and says so")
        elif not HINT.search(task):
            problems.append(f"{title}: no hint in a folded <details><summary>Hint block")
    if not any(SKETCH.search(s) for s in markdown):
        problems.append("no open question with a folded answer sketch")
    return problems


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_hints_are_folded_and_one_stretch_task_has_none(solution):
    assert structure_problems(nbformat.read(solution, as_version=4)) == []


def test_the_structure_check_can_fail():
    nb = nbformat.read(SOLUTIONS[0], as_version=4)
    assert structure_problems(nb) == []
    for cell in nb.cells:  # fold no hint, sketch nothing, and call every task a stretch
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("<details>", "<div>").replace("## 1. ", "## 1. Stretch: ")
    problems = structure_problems(nb)
    assert any("2 stretch tasks" in p for p in problems), problems
    assert any(p.startswith("## 2. ") and "no hint" in p for p in problems), problems
    assert any("no open question" in p for p in problems), problems
