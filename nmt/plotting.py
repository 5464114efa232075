"""Attention heatmaps and training curves (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nmt.fileio import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG, atomically (a half-written PNG never replaces
    the last one), and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_attention(weights: np.ndarray, source_pieces: Sequence[str], target_pieces: Sequence[str],
                   path: str | Path) -> None:
    """Write a heatmap of ``weights`` [target, source] with the pieces on the axes as a PNG."""
    plt = _pyplot()
    rows, cols = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * cols + 1.5), max(3.0, 0.4 * rows + 1.5)))
    ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), list(source_pieces)[:cols], rotation=90, fontsize=9)
    ax.set_yticks(range(rows), list(target_pieces)[:rows], fontsize=9)
    ax.set_xlabel("source pieces")
    ax.set_ylabel("target pieces")
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                title: str, path: str | Path) -> None:
    """Write a line plot of named ``(x, y)`` series as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)
