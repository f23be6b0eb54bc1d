"""What the first cell of every chapter and exercise calls: seed, style, data.

Chapter: warmup.
"""

from __future__ import annotations

import os
import sys

from llama_from_scratch import datafiles
from llama_from_scratch.notebook.plotting import use_book_style
from llama_from_scratch.notebook.seeding import seed_everything


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup(seed: int = 0, quiet: bool = False) -> None:
    """Seed every generator, set the book's figure style and make sure the data folder exists.

    On Colab the data files are downloaded on first use into `/content/llama_data`
    (visible in the file browser); elsewhere `$LLAMA_DATA_DIR` or the user cache is used
    (see `llama_from_scratch.datafiles`).
    """
    if in_colab():
        os.environ.setdefault(datafiles.ENV_VAR, "/content/llama_data")
        try:  # lets ipywidgets 8 widgets render in Colab; harmless on 7
            from google.colab import output

            output.enable_custom_widget_manager()
        except Exception:  # noqa: BLE001 - an older Colab without it still runs the chapter
            pass
    seed_everything(seed)
    use_book_style()
    folder = datafiles.data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"seed {seed}; data files from {data_folder_name()}")


def data_folder_name() -> str:
    """Where the data files are, said without an absolute path: a built page must not show the
    build machine's folders (`python -m llama_from_scratch data list` prints the full paths)."""
    if os.environ.get(datafiles.ENV_VAR, "").strip():
        return f"the data folder ${datafiles.ENV_VAR} (named {datafiles.data_dir().name!r})"
    return "the user cache (~/.cache/llama_from_scratch unless $XDG_CACHE_HOME is set)"
