"""The fused additive-attention kernel for CPUs: built once per machine, loaded, and differentiated.

Bahdanau attention's scores ``v^T tanh(q + k)`` for every target position t and source position s
need the [B, T, S, U] tensor ``q + k``. TensorFlow's ops materialise it, its tanh and their
gradients, and stream them through memory some eleven times a training step; on CPUs that made
the attention a fifth of the sampled-softmax step although it holds a few percent of its FLOPs.
``additive_scores.cc`` (next to this module) computes the scores and their gradients a (t, s)
row of U values at a time, in registers (the backward pass recomputes the tanh).

The first process that needs it compiles the kernel with the C++ compiler TensorFlow's headers
ask for (``$CXX``, else ``g++`` or ``c++``; a few seconds) into ``$NMT_CACHE_DIR`` (default
``~/.cache/nmt``), named by a hash of the source, the TensorFlow version and build flags and
the CPU's flags (it is built for the CPU it runs on); later processes load it. Without a
compiler, or if the build fails, nmt says so once on stderr and uses TensorFlow's ops: same
results (to float32 rounding), slower. ``NMT_FUSED_KERNELS=0`` turns it off.

:func:`additive_scores` is used where it applies: float32 operands, no GPU visible to
TensorFlow (the kernel is CPU-only) and outside :func:`tensorflow_ops_only`, the scope that
exported SavedModels and XLA-compiled training steps are traced in.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import tensorflow as tf

from nmt.sysinfo import all_cpu_flags

SOURCE = Path(__file__).with_name("additive_scores.cc")

_lock = threading.Lock()
_ops_only = 0  # how many tensorflow_ops_only() scopes are open, in any thread


@contextlib.contextmanager
def tensorflow_ops_only() -> Iterator[None]:
    """Trace the functions inside with TensorFlow's own ops only (for SavedModels and XLA). Process-wide while
    open, so that traces made by other threads (the decoder's, for batches decoded side by side) follow it."""
    global _ops_only
    with _lock:
        _ops_only += 1
    try:
        yield
    finally:
        with _lock:
            _ops_only -= 1


def cache_dir() -> Path:
    """Where built kernels are kept: ``$NMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/nmt``, else ``~/.cache/nmt``."""
    if os.environ.get("NMT_CACHE_DIR"):
        return Path(os.environ["NMT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nmt"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _cpu_fingerprint() -> str:
    """The CPU's architecture and instruction-set flags (the kernel is built with ``-march=native``)."""
    return " ".join([platform.machine(), platform.processor(), *sorted(all_cpu_flags())])


def _build_flags() -> list[str]:
    flags = ["-shared", "-fPIC", "-O3", "-march=native", "-w", *tf.sysconfig.get_compile_flags(),
             *tf.sysconfig.get_link_flags()]
    return flags + (["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else [])


def built_kernel_path() -> Path:
    """The path of the built kernel for this source, TensorFlow and CPU, building it first if needed.

    Raises ``RuntimeError`` with a one-line reason when it cannot be built. The library is written
    to a temporary name and renamed, so a concurrent or interrupted build never leaves half a file.
    """
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    key = hashlib.sha256("\0".join([SOURCE.read_text(encoding="utf-8"), tf.__version__, compiler,
                                    *_build_flags(), _cpu_fingerprint()]).encode()).hexdigest()[:16]
    folder = cache_dir() / "kernels"
    target = folder / f"additive_scores-{key}.so"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".building-", suffix=".so")
    except OSError:  # an unwritable cache: build into a private temporary folder instead
        folder = Path(tempfile.mkdtemp(prefix="nmt-kernels-"))
        target = folder / target.name
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".building-", suffix=".so")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        done = subprocess.run([compiler, str(SOURCE), "-o", str(tmp), *_build_flags()], capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines() or [""]
            raise RuntimeError(f"{Path(compiler).name} failed: {lines[0].strip()[:200]}")
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"building with {compiler} failed: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


@functools.cache
def kernel() -> ModuleType | None:
    """The loaded kernel library (ops ``nmt_additive_scores`` and ``nmt_additive_scores_grad``), or
    None where it is turned off (``NMT_FUSED_KERNELS=0``) or cannot be built or loaded (said once on stderr)."""
    if os.environ.get("NMT_FUSED_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return tf.load_op_library(str(built_kernel_path()))
    except (RuntimeError, tf.errors.OpError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"warning: the fused attention kernel is unavailable ({reason}); "
              "using TensorFlow's ops (same results, slower)", file=sys.stderr)
        return None


@functools.cache
def _gpu_visible() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def additive_scores(q: tf.Tensor, keys: tf.Tensor, v: tf.Tensor) -> tf.Tensor | None:
    """``v^T tanh(q + keys)`` [B, T, S] for ``q`` [B, T, U], ``keys`` [B, S, U] and ``v`` [U, 1] by
    the fused kernel, differentiable; None where the kernel does not apply (see the module's text)."""
    if _ops_only or not all(x.dtype == tf.float32 for x in (q, keys, v)) or _gpu_visible():
        return None
    library = kernel()
    return None if library is None else library.nmt_additive_scores(q, keys, tf.reshape(v, [-1]))


@tf.RegisterGradient("NmtAdditiveScores")
def _additive_scores_grad(op: tf.Operation, d_scores: tf.Tensor) -> list[tf.Tensor]:
    q, keys, v = op.inputs
    return kernel().nmt_additive_scores_grad(q, keys, v, d_scores)
