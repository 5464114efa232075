"""The machine: its description for the JSON lines the scripts in ``scripts/`` print, its usable
CPU cores, and TensorFlow's CPU thread pools."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model, family and vector extensions, core count, Python and (if imported) TensorFlow
    versions, date.

    ``cpu_family_model`` is ``/proc/cpuinfo``'s ``cpu family``/``model``/``stepping``: a virtual
    machine's model name may say only "AMD EPYC" for CPU generations whose vector units differ
    twofold (AMD family 25 runs AVX-512 on 256-bit halves, family 26 on full 512-bit units).
    """
    cpu, flags, ids = platform.processor() or platform.machine(), [], {}
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and cpu in ("", platform.machine()):
                cpu = value
            elif key in ("cpu family", "model", "stepping") and key not in ids:
                ids[key] = value
            elif key == "flags" and not flags:
                have = set(value.split())
                flags = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in have]
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
