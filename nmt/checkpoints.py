"""Finding, checking and restoring the checkpoints of a run directory.

A checkpoint ``ckpt-N`` is two files, ``ckpt-N.index`` and ``ckpt-N.data-*``, and a folder's
``checkpoint`` state file names the newest complete one. TensorFlow writes a checkpoint under
``ckpt-N_temp`` and renames it into place, then rewrites the state file atomically, so a save
cut short (a kill, a full disk) leaves the state file naming the previous checkpoint. These
helpers read that state without TensorFlow's log noise, turn every restore failure into one
clear error, and remove what an interrupted save left behind.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from nmt.errors import InputError

_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)
_NUMBER = re.compile(r"-(\d+)$")


def checkpoint_number(prefix: str | Path) -> int:
    """The step number at the end of a checkpoint prefix (``.../ckpt-1200`` -> 1200; -1 if none)."""
    m = _NUMBER.search(str(prefix))
    return int(m.group(1)) if m else -1


def latest_checkpoint(folder: str | Path) -> str | None:
    """The checkpoint a folder's state file names, or None when the folder has none yet."""
    folder = Path(folder)
    state = folder / "checkpoint"
    if not state.is_file():
        return None
    try:
        text = state.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{state}: unreadable checkpoint state file ({exc})") from None
    m = _STATE_LINE.search(text)
    if m is None:
        raise InputError(f"{state}: not a checkpoint state file (no model_checkpoint_path line)")
    path = Path(m.group(1))
    prefix = path if path.is_absolute() else folder / path.name
    if not Path(f"{prefix}.index").is_file():
        raise InputError(f"{state}: names {prefix.name}, whose files are missing")
    return str(prefix)


def list_checkpoints(folder: str | Path) -> list[str]:
    """Every checkpoint prefix present in ``folder`` (by its ``.index`` file), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = [str(p.with_suffix("")) for p in folder.glob("*.index")]
    return sorted(prefixes, key=checkpoint_number, reverse=True)


def checkpoint_values(prefix: str) -> dict[str, Any]:
    """Every saved value of a checkpoint by name (bookkeeping entries excluded), as numpy arrays."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}


def remove_partial_saves(folder: str | Path) -> list[str]:
    """Delete what interrupted saves left in ``folder`` (``*_temp`` directories); return their names."""
    folder = Path(folder)
    removed = []
    for p in folder.glob("*_temp*") if folder.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def restore(checkpoint: Any, prefix: str, partial: bool = False) -> None:
    """Restore ``checkpoint`` (a ``tf.train.Checkpoint``) from ``prefix``; failures become one clear error.

    ``partial`` allows the file to hold more than ``checkpoint`` (an optimizer, counters), as
    when translation loads only the model. Every object of ``checkpoint`` must be found.
    """
    try:
        status = checkpoint.restore(prefix)
        if partial:
            status = status.expect_partial()
        status.assert_existing_objects_matched()
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types for bad files
        raise InputError(f"{prefix}: {describe_restore_error(exc)}") from None


def error_reason(exc: BaseException) -> str:
    """The readable part of a (TensorFlow) error: ``{{function_node ...}} path; No space left on device
    [Op:SaveV2]`` gives ``path; No space left on device``."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\{\{[^}]*\}\}\s*", "", first)
    first = re.sub(r"\s*\[Op:\w+\]$", "", first)
    if len(first) > 200:
        head, sep, tail = first.rpartition(";")
        first = f"...{head[-60:]}{sep}{tail[:120]}" if sep else first[:200]
    return first


def describe_restore_error(exc: BaseException) -> str:
    """Say whether a restore failed because the file is damaged or because it belongs to another model."""
    first = error_reason(exc)
    if isinstance(exc, AssertionError) or re.search(r"shape|Shapes|unresolved|not found in checkpoint", first):
        return f"does not fit this run's model and vocabulary ({first})"
    return f"is damaged or incomplete ({first})"
