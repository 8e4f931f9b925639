"""The look of every figure vlmprune draws (reports and a search's plots): one matplotlib
style, applied before drawing. `svg.hashsalt` makes an SVG's element ids depend on its content
alone, so a rerun writes the same bytes; `text.parse_math` off because labels come from the
store (a cell's label, a method), and mathtext would read "$...$" in them as math, or fail on
it ("$\\input{x}$" raised and the report with it): no figure here writes math on purpose."""

from __future__ import annotations

STYLE = {"svg.hashsalt": "vlmprune", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "figure.dpi": 120, "text.parse_math": False}


def apply() -> None:
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
