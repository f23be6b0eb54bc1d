"""The notebooks' setup cell says where the data files are without printing a machine path."""

from __future__ import annotations

import pytest

from llama_from_scratch.notebook import setup_cell


@pytest.fixture(autouse=True)
def no_global_side_effects(monkeypatch):
    """setup() also seeds every generator and sets matplotlib's style: not for the whole test run."""
    monkeypatch.setattr(setup_cell, "seed_everything", lambda seed: None)
    monkeypatch.setattr(setup_cell, "use_book_style", lambda: None)


def test_setup_names_the_data_folder_without_its_absolute_path(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "home" / "someone" / "llama_data"
    monkeypatch.setenv("LLAMA_DATA_DIR", str(folder))
    setup_cell.setup(seed=3)
    out = capsys.readouterr().out
    assert out == "seed 3; data files from the data folder $LLAMA_DATA_DIR (named 'llama_data')\n"
    assert folder.is_dir() and str(tmp_path) not in out


def test_without_the_variable_it_names_the_user_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LLAMA_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    setup_cell.setup(seed=0)
    out = capsys.readouterr().out
    assert "the user cache" in out and str(tmp_path) not in out
    assert (tmp_path / "llama_from_scratch").is_dir()
    setup_cell.setup(seed=0, quiet=True)
    assert capsys.readouterr().out == ""
