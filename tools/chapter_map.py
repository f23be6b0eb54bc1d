"""The chapter map: which modules each chapter builds, read from the modules' own docstrings.

Every module of `llama_from_scratch` (but a subpackage's `__init__` and `__main__`) ends its
docstring with `Chapter: <slug>.` or `Chapter: <slug> (also shown in: <slug>, <slug>).`, where
a slug is a chapter's file name without its number (`book/03_attention.ipynb` -> `attention`).
This tool writes `book/package_map.md` from those lines and checks that every
`show_source(X)` in a chapter shows a module whose `Chapter:` line names that chapter.

    python -m tools.chapter_map          # rewrite book/package_map.md
    python -m tools.chapter_map --check  # exit 1 when the page is stale or a check fails
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tools.notebooks import ROOT

PACKAGE = ROOT / "llama_from_scratch"
PAGE = ROOT / "book" / "package_map.md"
# The book's final order (issue 8); chapters not written yet have no notebook.
BOOK_ORDER = ["warmup", "tokenizer", "rmsnorm_embeddings", "attention", "rope", "swiglu", "decoder",
              "sampling", "pretraining", "scaling_laws", "instruction_tuning", "reward_model", "rlhf",
              "scale_out", "real_weights"]
# Where the chapters still to come will put their modules.
PLANNED_FOLDERS = {"pretraining": "training/", "scaling_laws": "scaling/", "instruction_tuning": "alignment/",
                   "reward_model": "alignment/", "rlhf": "alignment/", "scale_out": "distributed/"}
CHAPTER_LINE = re.compile(r"Chapter: (?P<slug>[a-z0-9_]+)(?: \(also shown in: (?P<also>[a-z0-9_, ]+)\))?\.")


@dataclass(frozen=True)
class Module:
    path: str  # relative to the package folder, e.g. "model/rope.py"
    summary: str  # the docstring's first line
    chapter: str
    also: tuple[str, ...]


def number(slug: str) -> int:
    return BOOK_ORDER.index(slug)


def module_files() -> list[Path]:
    """Every module that must name a chapter: all but `__init__.py` and `__main__.py`."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py") and "__pycache__" not in p.parts)


def read_module(path: Path) -> Module:
    """The module's `Chapter:` line, parsed; ValueError saying what is wrong when it is missing or bad."""
    return parse_docstring(ast.get_docstring(ast.parse(path.read_text())), path.relative_to(PACKAGE).as_posix())


def parse_docstring(docstring: str | None, where: str) -> Module:
    """A module docstring's `Chapter:` line (its last line); `where` names the module in errors."""
    if not docstring:
        raise ValueError(f"{where}: no module docstring (it must end with `Chapter: <slug>.`)")
    lines = docstring.strip().splitlines()
    match = CHAPTER_LINE.fullmatch(lines[-1].strip())
    if match is None:
        raise ValueError(f"{where}: the docstring's last line is {lines[-1].strip()!r}, not "
                         "`Chapter: <slug>.` or `Chapter: <slug> (also shown in: <slug>, <slug>).`")
    also = tuple(s.strip() for s in match["also"].split(",")) if match["also"] else ()
    for slug in (match["slug"], *also):
        if slug not in BOOK_ORDER:
            raise ValueError(f"{where}: `Chapter:` names {slug!r}, which is not a chapter of the book "
                             f"(tools/chapter_map.py BOOK_ORDER: {', '.join(BOOK_ORDER)})")
    return Module(where, lines[0].strip(), match["slug"], also)


def modules() -> list[Module]:
    return [read_module(path) for path in module_files()]


def chapter_notebooks() -> dict[str, Path]:
    """slug -> book/NN_slug.ipynb, for the chapters written so far."""
    found = {}
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        slug = path.stem[3:]
        if slug not in BOOK_ORDER or int(path.stem[:2]) != number(slug):
            raise ValueError(f"{path.name}: expected book/{{NN}}_{{slug}}.ipynb in the order of BOOK_ORDER")
        found[slug] = path
    return found


def title(path: Path) -> str:
    """The notebook's first heading, without the #s."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    raise ValueError(f"{path.name} has no heading")


def planned_titles() -> dict[int, str]:
    """'8' -> 'Pretraining': the numbered plan in book/intro.md names the chapters still to come."""
    text = (ROOT / "book" / "intro.md").read_text().split("## The plan of the book", 1)[-1]
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^(\d+)\. (.+)$", text, flags=re.M)}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The whole page, from the modules' docstrings and the chapters' headings."""
    mods = modules()
    notebooks = chapter_notebooks()
    plan = planned_titles()
    out = ["# Map of the package", "",
           "<!-- Written by `python -m tools.chapter_map` from the modules' docstrings: do not edit. -->", "",
           "Every module of `llama_from_scratch` ends its docstring with the chapter that builds it",
           "(`Chapter: <slug>.`, sometimes with the chapters that show it again). This page lists",
           "them chapter by chapter, then folder by folder: a reader who knows the chapter knows",
           "the folder. Paths are relative to `llama_from_scratch/`.", ""]
    for slug in BOOK_ORDER:
        n = number(slug)
        if slug not in notebooks:
            if n not in plan:
                raise ValueError(f"book/intro.md's plan of the book has no chapter {n} ({slug})")
            out += [f"## {n}. {plan[n]} (to come)", ""]
            built = [m for m in mods if m.chapter == slug]
            if built:  # the package's part is written before the chapter that shows it
                out += ["Written ahead of the chapter:", "", "| module | what it holds |", "|---|---|"]
                out += [f"| `{m.path}` | {_cell(m.summary)} |" for m in built] + [""]
            elif slug in PLANNED_FOLDERS:
                out += [f"Its modules will go in `{PLANNED_FOLDERS[slug]}`.", ""]
            continue
        heading = title(notebooks[slug])
        out += [f"## {heading}", "", f"Chapter [{notebooks[slug].stem}]({notebooks[slug].name}) builds:", ""]
        out += ["| module | what it holds |", "|---|---|"]
        out += [f"| `{m.path}` | {_cell(m.summary)} |" for m in mods if m.chapter == slug]
        shown = [f"`{m.path}` (chapter {number(m.chapter)})" for m in mods if slug in m.also]
        out += ["", "Also shown here: " + ", ".join(shown) + ".", ""] if shown else [""]
    out += ["## Folders", "", "| folder | built in chapters | what |", "|---|---|---|"]
    for folder, summary in folders():
        inside = [m for m in mods if m.path == folder or m.path.startswith(folder)]
        chapters = sorted({m.chapter for m in inside}, key=number)
        planned = sorted((s for s, f in PLANNED_FOLDERS.items() if f == folder and s not in chapters), key=number)
        served = ", ".join([f"{number(s):02d} {s}" for s in chapters]
                           + [f"{number(s):02d} {s} (to come)" for s in planned])
        out.append(f"| `{folder}` | {served} | {_cell(summary)} |")
    return "\n".join(out) + "\n"


def folders() -> list[tuple[str, str]]:
    """(folder or top-level module, first line of its docstring), subpackages first, then planned."""
    rows = [(f"{init.parent.name}/", ast.get_docstring(ast.parse(init.read_text())).splitlines()[0])
            for init in sorted(PACKAGE.glob("*/__init__.py"))]
    rows += [(p.name, read_module(p).summary) for p in sorted(PACKAGE.glob("*.py")) if p.name != "__main__.py"
             and p.name != "__init__.py"]
    return rows + [(f, "to come") for f in dict.fromkeys(PLANNED_FOLDERS.values()) if f not in dict(rows)]


def _code_cells(path: Path) -> list[ast.Module]:
    trees = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            try:
                trees.append(ast.parse(source))
            except SyntaxError as err:
                raise ValueError(f"{path.name}, code cell {index}: {err}") from err
    return trees


def show_source_targets(path: Path) -> list[tuple[str, str | Exception]]:
    """(X, the module file X lives in, relative to the package) for every `show_source(X)` in a notebook.

    X is resolved by running the notebook's `llama_from_scratch` import statements (nothing
    else) and evaluating X's expression, e.g. `Transformer.forward` or `bpe_basic.train`; when
    that fails, the exception stands in for the module.
    """
    trees = _code_cells(path)
    namespace: dict = {}
    for tree in trees:
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(name.split(".")[0] == "llama_from_scratch" for name in names):
                try:
                    exec(compile(ast.Module(body=[node], type_ignores=[]), path.name, "exec"), namespace)  # noqa: S102
                except ImportError as err:
                    raise ValueError(f"{path.name}: `{ast.unparse(node)}` fails: {err}") from err
    targets: list[tuple[str, str | Exception]] = []
    for tree in trees:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "show_source"):
                continue
            expr = ast.unparse(node.args[0]) if node.args else "?"
            try:
                obj = eval(expr, namespace)  # noqa: S307 - an expression from our own chapter
                targets.append((expr, Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve().relative_to(PACKAGE).as_posix()))
            except Exception as err:  # noqa: BLE001 - any failure means the call cannot be checked
                targets.append((expr, err))
    return targets


def show_source_problems(path: Path, slug: str | None = None) -> list[str]:
    """One line per `show_source(X)` in a chapter whose X lives in a module not naming that chapter."""
    slug = slug or path.stem[3:]
    by_path = {m.path: m for m in modules()}
    problems = []
    for expr, where in show_source_targets(path):
        if isinstance(where, Exception):
            problems.append(f"{path.name}: show_source({expr}): cannot tell which package module it shows "
                            f"({type(where).__name__}: {where}); import X from llama_from_scratch by name")
            continue
        module = by_path[where]
        if slug != module.chapter and slug not in module.also:
            problems.append(f"{path.name}: show_source({expr}) shows {where}, whose `Chapter:` line names "
                            f"{', '.join((module.chapter, *module.also))}, not {slug}: add {slug} to its "
                            "`(also shown in: ...)` list")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if book/package_map.md is stale or a chapter shows another chapter's module")
    check = parser.parse_args(argv).check
    problems: list[str] = []
    try:
        page = render()
    except ValueError as err:  # a missing or malformed `Chapter:` line
        page, problems = None, [str(err)]
    if page is not None and not check:
        PAGE.write_text(page)
        print(f"wrote {PAGE}")
    elif page is not None and (not PAGE.exists() or PAGE.read_text() != page):
        problems.append(f"{PAGE} is stale: run `python -m tools.chapter_map`")
    for path in chapter_notebooks().values():
        try:
            problems += show_source_problems(path)
        except ValueError as err:  # a chapter's import or cell that does not even parse
            problems.append(str(err))
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if check and not problems:
        print(f"{PAGE} is up to date; every show_source shows a module of its chapter")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
