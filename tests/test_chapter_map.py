"""The chapter map: every module names the chapter that builds it, every `show_source(X)` in a
chapter shows a module of that chapter, and book/package_map.md is what the tool writes."""

from __future__ import annotations

import re

import nbformat
import pytest

from tools import chapter_map
from tools.chapter_map import (BOOK_ORDER, PACKAGE, PAGE, chapter_notebooks, module_files, modules,
                               parse_docstring, read_module, render, show_source_problems, show_source_targets)
from tools.notebooks import ROOT, code_cells

CHAPTERS = chapter_notebooks()


def test_the_page_is_up_to_date():
    assert PAGE.read_text() == render(), "book/package_map.md is stale: run `python -m tools.chapter_map`"


@pytest.mark.parametrize("path", module_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_module_names_a_chapter_of_the_book(path):
    module = read_module(path)  # raises, saying what is wrong, when the line is missing or names no chapter
    assert module.chapter in BOOK_ORDER and all(slug in BOOK_ORDER for slug in module.also)


def test_every_module_is_on_the_page():
    page = PAGE.read_text()
    missing = [p.relative_to(PACKAGE).as_posix() for p in module_files()
               if f"| `{p.relative_to(PACKAGE).as_posix()}` |" not in page]
    assert not missing


def test_chapter_files_follow_the_book_order():
    assert CHAPTERS, "no chapter found in book/"
    for slug, path in CHAPTERS.items():
        assert path.name == f"{BOOK_ORDER.index(slug):02d}_{slug}.ipynb"


@pytest.mark.parametrize("slug", list(CHAPTERS), ids=str)
def test_show_source_shows_a_module_of_its_chapter(slug):
    assert show_source_problems(CHAPTERS[slug]) == []


@pytest.mark.parametrize("slug", list(CHAPTERS), ids=str)
def test_every_show_source_call_is_found(slug):
    """The AST walk sees every call the text holds (none hidden in a form the check skips)."""
    cells = code_cells(nbformat.read(CHAPTERS[slug], as_version=4))
    in_text = sum(len(re.findall(r"\bshow_source\(", cell.source)) for cell in cells)
    assert len(show_source_targets(CHAPTERS[slug])) == in_text


def _fake_chapter(tmp_path, name, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A fake chapter"),
                                         nbformat.v4.new_code_cell(source)])
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_a_chapter_showing_another_chapters_module_is_reported(tmp_path):
    path = _fake_chapter(tmp_path, "05_swiglu.ipynb", (
        "from llama_from_scratch.model.rope import apply_rope\n"
        "from llama_from_scratch.model import feedforward\n"
        "from llama_from_scratch.notebook.source import show_source\n"
        "show_source(feedforward.FeedForward.forward)\n"  # swiglu's own module: fine
        "show_source(apply_rope)\n"
        "show_source(not_imported)\n"))
    problems = show_source_problems(path)
    assert len(problems) == 2, problems
    assert "show_source(apply_rope) shows model/rope.py" in problems[0] and "not swiglu" in problems[0]
    assert "show_source(not_imported): cannot tell" in problems[1] and "NameError" in problems[1]


def test_also_shown_in_lets_a_second_chapter_show_a_module(tmp_path):
    source = ("from llama_from_scratch.model.transformer import Transformer\n"
              "from llama_from_scratch.notebook.source import show_source\n"
              "show_source(Transformer.forward)")
    assert read_module(PACKAGE / "model" / "transformer.py").chapter == "decoder"
    assert "rmsnorm_embeddings" in read_module(PACKAGE / "model" / "transformer.py").also
    assert show_source_problems(_fake_chapter(tmp_path, "02_rmsnorm_embeddings.ipynb", source)) == []
    assert len(show_source_problems(_fake_chapter(tmp_path, "05_swiglu.ipynb", source))) == 1


@pytest.mark.parametrize("docstring, complaint", [
    (None, "no module docstring"),
    ("Softmax.\n\nChapter: warmup.\nMore text after it.", "last line"),
    ("Softmax.\n\nChapter: warmup", "last line"),
    ("Softmax.\n\nChapter: warm_up.", "not a chapter of the book"),
    ("Softmax.\n\nChapter: warmup (also shown in: decoder, sorting).", "'sorting'"),
])
def test_a_bad_chapter_line_is_reported(docstring, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_docstring(docstring, "model/softmax.py")


def test_a_good_chapter_line_parses():
    module = parse_docstring("Softmax.\n\nMore.\n\nChapter: warmup (also shown in: decoder, sampling).", "x.py")
    assert (module.summary, module.chapter, module.also) == ("Softmax.", "warmup", ("decoder", "sampling"))


def test_check_fails_on_a_stale_page_and_passes_once_rewritten(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chapter_map, "show_source_problems", lambda path: [])  # checked above, on its own
    monkeypatch.setattr(chapter_map, "PAGE", tmp_path / "package_map.md")
    (tmp_path / "package_map.md").write_text(PAGE.read_text().replace("model/rope.py", "model/rotary.py"))
    assert chapter_map.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert chapter_map.main([]) == 0
    assert chapter_map.main(["--check"]) == 0
    assert (tmp_path / "package_map.md").read_text() == PAGE.read_text()


def test_the_page_is_in_the_table_of_contents_right_after_the_intro():
    from tools.notebooks import toc_files

    assert [p.relative_to(ROOT).as_posix() for p in toc_files()[:2]] == ["book/intro.md", "book/package_map.md"]


@pytest.mark.parametrize("part", sorted([f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
                                        + [p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")]))
def test_readme_layout_row_names_the_chapters_that_build_the_subpackage(part):
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith(f"| `llama_from_scratch/{part}` |")]
    assert len(rows) == 1, f"README.md's Layout table needs one row for llama_from_scratch/{part}"
    listed = set(re.findall(r"\b\d\d ([a-z_]+)", rows[0].split("|")[2]))
    assert listed == {m.chapter for m in modules() if m.path.startswith(part)}
