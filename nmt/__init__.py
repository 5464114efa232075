"""nmt: GRU encoder-decoder NMT with Bahdanau attention on TensorFlow.

The library API mirrors the CLI, so everything can be done from Python::

    from nmt import load_config, prepare, train, translate_lines

TensorFlow is imported lazily: ``import nmt`` alone stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_config": "nmt.config",
    "Config": "nmt.config",
    "prepare": "nmt.prepare",
    "train": "nmt.training",
    "Translator": "nmt.translate",
    "translate_lines": "nmt.translate",
    "export_model": "nmt.export",
    "score": "nmt.metrics",
    "NmtError": "nmt.errors",
    "InputError": "nmt.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
