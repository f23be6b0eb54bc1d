"""The package's layout rules (issue 8), checked on the real tree and shown able to fail on a fake one:
no module over 250 lines; the top level holds only subpackages plus __init__, __main__ and datafiles;
a subpackage's __init__ is only a docstring (no re-exports); a public name is defined in one module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tools.notebooks import ROOT

PACKAGE = ROOT / "llama_from_scratch"
MAX_LINES = 250
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "datafiles.py"}
# Public names that several modules define on purpose, each with the modules allowed to.
SHARED_NAMES = {
    # The command protocol: cli/main.py finds each command's module in COMMANDS and calls these two.
    "add_arguments": {"cli/align.py", "cli/chat.py", "cli/data.py", "cli/evaluate.py", "cli/generate.py",
                      "cli/scaling.py", "cli/tokenize.py", "cli/train.py"},
    "run": {"cli/align.py", "cli/chat.py", "cli/data.py", "cli/evaluate.py", "cli/generate.py", "cli/scaling.py",
            "cli/tokenize.py", "cli/train.py"},
    # Interchangeable trainers and encoders, used module-qualified (`bpe_basic.train`,
    # `bpe_fast.train`): chapter 1 and tests/test_tokenizer_bpe.py check the fast ones give the
    # readable ones' merges and ids; sentencepiece_trainer.train builds a `.model` the same way.
    "train": {"tokenizer/bpe_basic.py", "tokenizer/bpe_fast.py", "tokenizer/sentencepiece_trainer.py"},
    "encode": {"tokenizer/bpe_basic.py", "tokenizer/bpe_fast.py"},
}


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def oversized(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in modules(root)
            if (n := len(p.read_text().splitlines())) > MAX_LINES]


def top_level_problems(root: Path) -> list[str]:
    problems = []
    for entry in sorted(root.iterdir()):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir() and not (entry / "__init__.py").exists():
            problems.append(f"{entry.name}/ is a folder without __init__.py")
        elif entry.is_file() and entry.name not in TOP_LEVEL_MODULES:
            problems.append(f"{entry.name} sits at the top level: move it into the subpackage of its chapter")
    return problems


def init_problems(root: Path) -> list[str]:
    """Subpackage `__init__.py` files holding anything but a docstring."""
    problems = []
    for init in sorted(root.rglob("__init__.py")):
        if init.parent == root:
            continue
        body = ast.parse(init.read_text()).body
        if not body or not (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                            and isinstance(body[0].value.value, str)):
            problems.append(f"{init.relative_to(root)} has no docstring")
        if len(body) > 1:
            problems.append(f"{init.relative_to(root)} holds code (line {body[1].lineno}): only a docstring is "
                            "allowed, so every function keeps one import path")
    return problems


def public_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def duplicate_names(root: Path, allowed: dict[str, set[str]] = SHARED_NAMES) -> list[str]:
    """Public top-level names defined in more than one module (beyond the allowed modules)."""
    where = defaultdict(set)
    for path in modules(root):
        if path.name not in ("__init__.py", "__main__.py"):
            for name in public_names(path):
                where[name].add(path.relative_to(root).as_posix())
    return [f"{name} is defined in {', '.join(sorted(found))}" for name, found in sorted(where.items())
            if len(found) > 1 and not found <= allowed.get(name, set())]


def test_no_module_is_over_250_lines():
    problems = oversized(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_top_level_holds_only_subpackages_init_main_and_datafiles():
    problems = top_level_problems(PACKAGE)
    assert not problems, "\n".join(problems)
    assert [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"], "no subpackage?"


def test_every_subpackage_init_is_only_a_docstring():
    problems = init_problems(PACKAGE)
    assert not problems, "\n".join(problems)


def test_every_public_name_is_defined_once():
    problems = duplicate_names(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_shared_names_still_exist():
    """An allowance for a name no longer shared is dead: drop it from SHARED_NAMES."""
    for name, allowed in SHARED_NAMES.items():
        for module in allowed:
            assert name in public_names(PACKAGE / module), f"{module} no longer defines {name}"


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checks_can_fail(tmp_path):
    """A fake package breaking every rule: each break is reported."""
    root = tmp_path / "pkg"
    _write(root, "__init__.py", '"""Root."""\n')
    _write(root, "datafiles.py", '"""Data."""\n')
    _write(root, "helpers.py", '"""A stray top-level module."""\ndef softmax(x):\n    return x\n')
    _write(root, "model/__init__.py", '"""Model."""\nfrom .softmax import softmax\n')
    _write(root, "model/softmax.py", '"""Softmax."""\n' + "\n" * 260 + "def softmax(x):\n    return x\n")
    _write(root, "tokenizer/__init__.py", "import os\n")
    _write(root, "tokenizer/bpe_basic.py", '"""Allowed."""\ndef train():\n    pass\n')
    _write(root, "tokenizer/bpe_fast.py", '"""Allowed."""\ndef train():\n    pass\n')
    (root / "stray_folder").mkdir()

    assert oversized(root) == ["model/softmax.py: 263 lines"]
    assert top_level_problems(root) == [
        "helpers.py sits at the top level: move it into the subpackage of its chapter",
        "stray_folder/ is a folder without __init__.py"]
    problems = init_problems(root)
    assert any("model/__init__.py holds code (line 2)" in p for p in problems)
    assert any("tokenizer/__init__.py has no docstring" in p for p in problems)
    assert duplicate_names(root) == ["softmax is defined in helpers.py, model/softmax.py"]
    assert duplicate_names(root, allowed={}) == ["softmax is defined in helpers.py, model/softmax.py",
                                                 "train is defined in tokenizer/bpe_basic.py, tokenizer/bpe_fast.py"]
