"""``nmt average``: the element-wise mean of several checkpoints of a run, as one checkpoint.

Averaging the weights of a run's last few checkpoints (OpenNMT-tf's ``average_checkpoints``,
JoeyNMT's ``scripts/average_checkpoints.py``, Marian's exponential smoothing in spirit) often
translates a little better than any one of them: late in a run the checkpoints sit around the
same minimum and their mean lies nearer its centre. Only the model's trainable weights are
averaged; the optimizer's moments and counters are not saved (the result is for translation,
evaluation and export, not for ``nmt train --resume``).

The result is written as ``<run>/averaged/`` (or any ``out_dir``): one ``ckpt-N`` (N the
newest averaged step), a ``checkpoint`` state file and ``averaged.json`` naming the inputs, so
``nmt translate --checkpoint averaged`` and every ``--checkpoint PATH`` option read it. The
folder appears whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nmt.checkpoints import checkpoint_number, list_checkpoints
from nmt.errors import InputError


def select_checkpoints(run_dir: str | Path, last: int | None = None, checkpoints: Sequence[str] = ()) -> list[str]:
    """The checkpoint prefixes to average, oldest first: the ``last`` newest of ``<run>/checkpoints/``,
    or ``checkpoints`` as ``--checkpoint`` takes them (``best``, ``last``, a prefix or a folder)."""
    from nmt.translate import find_checkpoint

    run_dir = Path(run_dir)
    if last is not None and checkpoints:
        raise InputError("give --last N or --checkpoint (repeated), not both")
    if last is None and not checkpoints:
        raise InputError("nothing to average: give --last N or one --checkpoint per checkpoint")
    if last is not None:
        if last < 1:
            raise InputError(f"--last must be at least 1, got {last}")
        folder = run_dir / "checkpoints"
        found = list_checkpoints(folder)
        if len(found) < last:
            raise InputError(f"{folder}: {len(found)} checkpoint(s), fewer than --last {last} "
                             "(training.keep_checkpoints sets how many a run keeps)")
        return found[:last][::-1]
    prefixes, seen = [find_checkpoint(run_dir, c) for c in checkpoints], set()
    for p in prefixes:
        if Path(p).resolve() in seen:
            raise InputError(f"{p}: given twice (each checkpoint is averaged once)")
        seen.add(Path(p).resolve())
    return sorted(prefixes, key=checkpoint_number)


def average_checkpoints(run_dir: str | Path, prefixes: Sequence[str], out_dir: str | Path | None = None,
                        overwrite: bool = False) -> str:
    """Write the mean of ``prefixes``' model weights (checkpoints of ``run_dir``) as a checkpoint.

    ``out_dir`` defaults to ``<run_dir>/averaged``; an existing one is refused unless
    ``overwrite``. Every checkpoint must fit the run's model (else one clear error naming it).
    Returns the prefix written.
    """
    import tensorflow as tf

    from nmt.checkpoints import restore
    from nmt.fileio import atomic_directory
    from nmt.model import build_model
    from nmt.translate import read_run

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "averaged"
    if not prefixes:
        raise InputError("no checkpoints to average")
    if out.exists() and not overwrite:  # refused before the model is built (atomic_directory checks again)
        raise InputError(f"{out}: already exists (use --overwrite to replace it)")
    config, manifest = read_run(run_dir)
    model = build_model(config.model, manifest["vocab"]["src_size"], manifest["vocab"]["tgt_size"])
    checkpoint = tf.train.Checkpoint(model=model)
    weights = model.trainable_variables
    sums = [np.zeros(w.shape, np.float64) for w in weights]
    for prefix in prefixes:  # oldest first: the newest leaves its non-trainable state (RNG seeds)
        restore(checkpoint, prefix, partial=True)
        for total, w in zip(sums, weights):
            total += w.numpy()
    for total, w in zip(sums, weights):
        w.assign((total / len(prefixes)).astype(w.numpy().dtype))
    name = f"ckpt-{max(0, max(checkpoint_number(p) for p in prefixes))}"
    with atomic_directory(out, overwrite=overwrite) as tmp:
        checkpoint.write(str(tmp / name))
        # written by hand, relative, so that the state file stays right once the folder is renamed
        (tmp / "checkpoint").write_text(f'model_checkpoint_path: "{name}"\n'
                                        f'all_model_checkpoint_paths: "{name}"\n', encoding="utf-8")
        info = {"run_dir": str(run_dir), "checkpoints": [str(p) for p in prefixes],
                "steps": [checkpoint_number(p) for p in prefixes]}
        (tmp / "averaged.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return str(out / name)
