"""Every chapter executes top to bottom without an error.

A chapter asserts the facts it relies on in its own cells, so executing it checks them.
The executed copies are cached (tools/notebooks.py) and `make book` builds from them.
"""

from __future__ import annotations

import pytest

from tools.notebooks import ROOT, book_notebooks, execute_notebook


@pytest.mark.parametrize("path", book_notebooks(), ids=lambda p: p.name)
def test_chapter_executes_without_error(path):
    result = execute_notebook(path)
    assert not result.errors, f"{path.relative_to(ROOT)} raised:\n" + "\n".join(result.errors)


def test_a_raising_cell_is_reported(tmp_path):
    """The check above can fail: a chapter whose assert does not hold is caught."""
    import nbformat

    nb = nbformat.read(book_notebooks()[0], as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'arithmetic is broken'"))
    broken = tmp_path / "broken_chapter.ipynb"
    nbformat.write(nb, broken)
    result = execute_notebook(broken, use_cache=False)
    assert result.errors and "AssertionError: arithmetic is broken" in result.errors[-1]
