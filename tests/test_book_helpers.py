"""The chapters' helpers: source rendering, seeding, figure style, graders' messages."""

from __future__ import annotations

import inspect

import matplotlib as mpl
import pytest
import torch

from llama_from_scratch.model import masks
from llama_from_scratch.notebook import seeding
from llama_from_scratch.notebook.grading import attempt, check_close
from llama_from_scratch.notebook.plotting import PALETTE, use_book_style
from llama_from_scratch.notebook.source import show_source


def test_show_source_renders_the_real_source_with_its_location():
    shown = show_source(masks.causal_mask)
    assert shown.code == inspect.getsource(masks.causal_mask)
    lines = inspect.getsourcelines(masks.causal_mask)
    assert shown.caption == f"llama_from_scratch/model/masks.py, lines {lines[1]}-{lines[1] + len(lines[0]) - 1}"
    html = shown._repr_html_()
    assert "causal_mask" in html and "style=" in html and "llama_from_scratch/model/masks.py" in html
    assert repr(shown).startswith("# llama_from_scratch/model/masks.py")


def test_seed_everything_makes_runs_repeat():
    seeding.seed_everything(3)
    first = torch.randn(4)
    generator = seeding.seed_everything(3)
    assert torch.equal(torch.randn(4), first)
    assert torch.equal(torch.randn(4, generator=generator), torch.randn(4, generator=torch.Generator().manual_seed(3)))


def test_book_style_sets_the_palette():
    use_book_style()
    assert mpl.rcParams["axes.prop_cycle"].by_key()["color"] == PALETTE


def test_attempt_turns_a_stub_into_a_clear_message():
    def my_function(x):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="`my_function` is not implemented yet"):
        attempt(my_function, 1)
    assert attempt(lambda x: x + 1, 1) == 2


@pytest.mark.parametrize("actual,message", [
    ([1.0, 2.0], "expected a torch.Tensor, got list"),
    (torch.zeros(3), r"shape \(3,\), expected \(2,\)"),
    (torch.zeros(2, dtype=torch.float64), "dtype torch.float64, expected torch.float32"),
    (torch.tensor([1.0, 5.0]), r"1 of 2 values differ; first at index \(1,\): yours 5.0, expected 2.0"),
])
def test_check_close_says_what_is_wrong(actual, message):
    with pytest.raises(AssertionError, match=message):
        check_close(actual, torch.tensor([1.0, 2.0]), "thing")
    check_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), "thing")


def test_show_source_of_a_decorated_function_names_its_own_file():
    from llama_from_scratch.training.clipping import clip_grad_norm  # @torch.no_grad()

    shown = show_source(clip_grad_norm)
    assert shown.caption.startswith("llama_from_scratch/training/clipping.py, lines ")
    assert shown.code.lstrip().startswith("@torch.no_grad()") or "def clip_grad_norm" in shown.code.splitlines()[0]
