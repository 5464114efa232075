"""The machine a benchmark ran on, for the JSON lines the scripts in ``scripts/`` print."""

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
