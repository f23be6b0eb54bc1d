"""One figure style for the whole book.

Chapter: warmup.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib as mpl

# Colour-blind-safe (Okabe-Ito), in the order lines are drawn.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def use_book_style() -> None:
    """Set matplotlib's defaults for the book: readable sizes, light grid, no top/right spines."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 3.6),
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": mpl.cycler(color=PALETTE),
        "lines.linewidth": 1.8,
        "legend.frameon": False,
        "image.cmap": "viridis",
    })


def show_figure(fig, alt: str) -> None:
    """Display `fig` as a PNG that carries `alt` as its alt text, then close it.

    For figures drawn inside a widget (ipywidgets' outputs have no cell metadata, so the
    book's alt text cannot reach them another way); the image scales to the page's width.
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    display(HTML(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                 'style="max-width:100%">'))
