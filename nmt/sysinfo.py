"""The machine: its description for the JSON lines the scripts in ``scripts/`` print, its usable
CPU cores, TensorFlow's process settings and its CPU thread pools."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import sys
from pathlib import Path


def tensorflow_environment(quiet: bool = False) -> None:
    """Set nmt's defaults for TensorFlow's process-wide settings, unless the user set them: call
    before TensorFlow is imported (it reads them once, at import or when it makes its CPU device).
    ``quiet`` (the CLI, the scripts, the tests) also hides TensorFlow's C++ start-up log
    (``TF_CPP_MIN_LOG_LEVEL=3``); the library leaves the user's logging alone.

    - ``TF_ENABLE_ONEDNN_OPTS=1``: oneDNN's kernels on CPUs (TensorFlow's default on x86 Linux).
    - ``TF_CPU_ALLOCATOR_USE_BFC=1``: every host tensor from one best-fit-with-coalescing pool
      that keeps and reuses freed blocks. oneDNN builds otherwise use their ``mklcpu`` allocator,
      which hands tensors under 4 KB to malloc and takes a process-wide lock and a map lookup on
      every free. Measured on 2 cores: training 1.04x (full softmax) and greedy decoding 1.06-1.08x
      (4 batches at once), with 10-20% fewer page faults and about 5% more peak memory
      (docs/benchmarks.md, The machine's limit, session 22).
    - ``TF_CPU_BFC_MEM_LIMIT_IN_MB``: that pool's ceiling, the machine's memory (TensorFlow's own
      default is 64 GiB, a limit of its own below what a larger machine could give).
    """
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "1")
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): TensorFlow's default
        return
    os.environ.setdefault("TF_CPU_BFC_MEM_LIMIT_IN_MB", str(max(memory_mb, 1024)))


_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


@functools.cache
def all_cpu_flags() -> frozenset[str]:
    """Every flag of the first CPU in ``/proc/cpuinfo`` (``flags``, or ``Features`` on ARM); empty where
    there is no such file."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return frozenset()
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The vector extensions of the first CPU that nmt's choices and reports name (of ``avx2``, ``fma``,
    ``avx512f``, ``avx512_bf16``, ``amx_tile``); empty where there is no ``/proc/cpuinfo``."""
    return all_cpu_flags() & frozenset(_FLAGS)


def machine() -> dict[str, object]:
    """CPU model, family and vector extensions, core count, Python and (if imported) TensorFlow
    versions, date.

    ``cpu_family_model`` is ``/proc/cpuinfo``'s ``cpu family``/``model``/``stepping``: a virtual
    machine's model name may say only "AMD EPYC" for CPU generations whose vector units differ
    twofold (AMD family 25 runs AVX-512 on 256-bit halves, family 26 on full 512-bit units).
    """
    cpu, ids = platform.processor() or platform.machine(), {}
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and cpu in ("", platform.machine()):
                cpu = value
            elif key in ("cpu family", "model", "stepping") and key not in ids:
                ids[key] = value
    flags = [f for f in _FLAGS if f in cpu_flags()]
    out: dict[str, object] = {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
                              "python": platform.python_version(), "date": datetime.date.today().isoformat()}
    if ids:
        out["cpu_family_model"] = "/".join(ids.get(k, "?") for k in ("cpu family", "model", "stepping"))
    if "tensorflow" in sys.modules:
        out["tensorflow"] = sys.modules["tensorflow"].__version__
    return out


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def set_cpu_threads(intra_op: int, inter_op: int) -> bool:
    """Size TensorFlow's intra- and inter-op thread pools; False (and nothing changed) once the
    runtime has started, whose pools are then kept (a second run in one process, tests)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        return False
    return True
