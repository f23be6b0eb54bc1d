"""Write the learner exercise notebooks from their solutions, so the two never drift.

The source of truth is `exercises/solutions/NN_name.ipynb`. In its code cells, each block
from a `### BEGIN SOLUTION` line to the matching `### END SOLUTION` line becomes
`raise NotImplementedError(...)` at the marker's indentation in `exercises/NN_name.ipynb`.
Stored outputs are dropped. A code cell whose first line starts with `# Grader` is a
grader: it must pass in the solution notebook and fail in the learner notebook.

    python -m tools.exercises          # rewrite every learner notebook
    python -m tools.exercises --check  # exit 1 if any is missing or stale
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from tools.notebooks import ROOT, solution_notebooks

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
GRADER_PREFIX = "# Grader"
STUB = 'raise NotImplementedError("Replace this line with your code.")'


def is_grader(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(GRADER_PREFIX)


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION block in `source` with a NotImplementedError stub."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def learner_notebook(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    nb = copy.deepcopy(solution)
    nb.metadata.pop("widgets", None)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, where=f"{name}, cell {index}")
            cell.outputs = []
            cell.execution_count = None
    return nb


def learner_path(solution_path: Path) -> Path:
    return solution_path.parent.parent / solution_path.name


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def stale_learner_notebooks(solutions: list[Path] | None = None) -> list[Path]:
    """Learner notebooks that are missing or differ from what their solution generates."""
    stale = []
    for solution in solution_notebooks() if solutions is None else solutions:
        wanted = render(learner_notebook(nbformat.read(solution, as_version=4), solution.name))
        target = learner_path(solution)
        if not target.exists() or target.read_text() != wanted:
            stale.append(target)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale learner notebooks")
    args = parser.parse_args(argv)
    stale = stale_learner_notebooks()
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `python -m tools.exercises`)", file=sys.stderr)
        return 1 if stale else 0
    for solution in solution_notebooks():
        target = learner_path(solution)
        target.write_text(render(learner_notebook(nbformat.read(solution, as_version=4), solution.name)))
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def run_nbval(paths: list[Path], rootdir: Path, junit: Path) -> dict[Path, dict[int, bool]]:
    """Grade `paths` the way a learner does (`pytest --nbval-lax`), in one run.

    Returns, per notebook, whether each code cell (numbered among code cells, as nbval
    numbers them) passed.
    """
    import subprocess
    import xml.etree.ElementTree as ET

    subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(rootdir), f"--junitxml={junit}", *map(str, paths)],
        cwd=rootdir, capture_output=True, text=True, check=False,
    )
    by_class = {".".join(p.resolve().relative_to(rootdir.resolve()).parts): p for p in paths}
    outcomes: dict[Path, dict[int, bool]] = {p: {} for p in paths}
    for case in ET.parse(junit).iter("testcase"):
        path = by_class.get(case.get("classname", ""))
        name = case.get("name", "")
        if path is None or not name.startswith("Cell "):
            continue
        failed = any(child.tag in ("failure", "error") for child in case)
        outcomes[path][int(name.removeprefix("Cell "))] = not failed
    return outcomes


def grading_problems(nb: nbformat.NotebookNode, outcomes: dict[int, bool], learner: bool) -> list[str]:
    """What is wrong with a graded run: in a solution every cell passes; in a learner
    notebook every grader cell fails and every other cell passes."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    problems = []
    if not any(is_grader(c) for c in cells):
        problems.append("no grader cell (a code cell starting with '# Grader')")
    for number, cell in enumerate(cells):
        if number not in outcomes:
            problems.append(f"cell {number} was not run")
            continue
        passed = outcomes[number]
        title = cell.source.strip().splitlines()[0][:60]
        if learner and is_grader(cell) and passed:
            problems.append(f"grader cell {number} ({title}) passes with the stubs: it cannot fail")
        elif (not learner or not is_grader(cell)) and not passed:
            problems.append(f"cell {number} ({title}) fails")
    return problems
