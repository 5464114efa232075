"""The machine: its description for the JSON lines the scripts in ``scripts/`` print, its usable
CPU cores, and TensorFlow's CPU thread pools."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model and vector extensions, core count, Python and (if imported) TensorFlow versions, date."""
    cpu, flags = platform.processor() or platform.machine(), []
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in have]
    out: dict[str, object] = {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
                              "python": platform.python_version(), "date": datetime.date.today().isoformat()}
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
