"""Fixtures shared by the alignment tests: llama2.c's stories260K, its tokenizer and its weights.

Import them into a test module (`from stories_fixtures import bin_path, model, tok`); pytest
finds fixtures by name in the module's namespace.
"""

from __future__ import annotations

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.tokenizer.load import load_tokenizer


@pytest.fixture(scope="module")
def bin_path():
    return datafiles.path("stories260K/stories260K.bin")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(datafiles.path("stories260K/tok512.bin"))


@pytest.fixture(scope="module")
def model(bin_path):
    torch.set_num_threads(1)  # the machine's cores are shared
    return load_model(bin_path)
