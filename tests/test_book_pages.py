"""The book's pages as a reader meets them, checked in the notebooks' sources (issue 14): code that
fits the page, figures with a folded plotting cell, alt text and a numbered caption, and glossary
links that lead somewhere. The rendered pages are checked in a real browser by test_browser.py."""

from __future__ import annotations

import re

import nbformat
import pytest

from tools.notebooks import ROOT, book_notebooks, learner_notebooks, solution_notebooks

WIDTH = 95  # characters of code a rendered page shows without scrolling
GLOSSARY = ROOT / "book" / "glossary.md"
PLOTS = re.compile(r"plt\.show\(\)|plt\.subplots\(|plt\.figure\(")


def _id(path):
    return str(path.relative_to(ROOT))


def long_lines(nb) -> list[str]:
    return [f"cell {i}: {len(line)} characters: {line[:60]}..."
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > WIDTH]


@pytest.mark.parametrize("path", book_notebooks() + learner_notebooks() + solution_notebooks(), ids=_id)
def test_code_fits_the_page(path):
    assert long_lines(nbformat.read(path, as_version=4)) == []


def figure_problems(nb, chapter: int) -> list[str]:
    """Each cell that draws a figure: plotting code folded (tag hide-input, unless tagged
    plot-is-lesson), alt text in its mystnb.image metadata, and a caption "*Figure C.N. ...*" in
    the next cell, numbered 1, 2, ... in order."""
    problems, number = [], 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not PLOTS.search(cell.source):
            continue
        number += 1
        tags = cell.metadata.get("tags", [])
        if "hide-input" not in tags and "plot-is-lesson" not in tags:
            problems.append(f"cell {i}: plotting code not folded (tag hide-input)")
        alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
        if len(alt) < 40:
            problems.append(f"cell {i}: no alt text (metadata mystnb.image.alt, a sentence or more)")
        after = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        expected = f"*Figure {chapter}.{number}."
        if after is None or after.cell_type != "markdown" or not after.source.lstrip().startswith(expected):
            problems.append(f"cell {i}: the next cell should be its caption, starting {expected!r}")
    return problems


@pytest.mark.parametrize("path", book_notebooks(), ids=_id)
def test_every_figure_has_folded_code_alt_text_and_a_numbered_caption(path):
    chapter = int(path.name[:2])
    assert figure_problems(nbformat.read(path, as_version=4), chapter) == []


def glossary_labels() -> list[str]:
    """Every entry's label, "(g-term)=" on its own line, in order."""
    return re.findall(r"^\((g-[a-z0-9-]+)\)=$", GLOSSARY.read_text(), flags=re.M)


def test_glossary_entries_are_labelled_once():
    labels = glossary_labels()
    assert len(labels) == len(set(labels)) >= 30


@pytest.mark.parametrize("path", book_notebooks(), ids=_id)
def test_glossary_links_lead_to_an_entry(path):
    nb = nbformat.read(path, as_version=4)
    links = {m for cell in nb.cells if cell.cell_type == "markdown"
             for m in re.findall(r"\]\(#(g-[a-z0-9-]+)\)", cell.source)}
    assert links - set(glossary_labels()) == set()
