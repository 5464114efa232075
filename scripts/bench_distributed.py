#!/usr/bin/env python
"""Training speed of one process vs two MultiWorkerMirroredStrategy workers on localhost.

Prints one JSON line per setup and repeat (target tokens/s over the last ``--log-every``
steps, and the loss then), alternating setups: 1 process with 2 threads, 1 process with 1
thread, 2 workers with 1 thread each (TF_CONFIG on 127.0.0.1, free ports). The model is the
one of ``scripts/stress.py`` (embeddings 64, bi-GRU 128, GRU 256, vocab 500) on a 3,000-pair
slice of the bundled sample; dropout is off so the losses are comparable.

    python scripts/bench_distributed.py [--steps 80] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stress import ENV, NMT, ROOT, setup  # noqa: E402

from nmt.distribute import localhost_tf_configs  # noqa: E402
from nmt.sysinfo import machine  # noqa: E402


def last_step_line(log: Path) -> dict:
    """Loss and tokens/s of the last progress line of a train.log."""
    line = [x for x in log.read_text().splitlines() if x.startswith("step ")][-1]
    loss = re.search(r"\| loss ([\d.]+) ", line)
    speed = re.search(r"\| ([\d,]+) tok/s ", line)
    return {"loss": float(loss.group(1)), "tokens_per_second": int(speed.group(1).replace(",", ""))}


def run(cfg: dict, work: Path, name: str, workers: int, threads: int) -> dict:
    run_dir = work / name
    cfg = {**cfg, "training": {**cfg["training"], "run_dir": str(run_dir), "threads": threads,
                               "distribution": "multi_worker" if workers > 1 else "none"}}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    tf_configs = localhost_tf_configs(workers)
    procs = []
    for i in range(workers):
        env = dict(ENV)
        if workers > 1:
            env["TF_CONFIG"] = tf_configs[i]
        procs.append(subprocess.Popen([*NMT, "train", "--config", str(path), "--overwrite"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=600)[1] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{name} failed: {errors[0][-500:]}")
    return last_step_line(run_dir / "train.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "distributed")
    args = ap.parse_args()
    cfg = yaml.safe_load(setup(args.work).read_text())
    cfg["model"]["dropout"] = 0.0
    cfg["training"].update({"max_steps": args.steps, "log_every": args.log_every, "batch_size": 64,
                            "checkpoint_every": 10**6, "validate_every": 10**6, "validate_max_sentences": 10})
    setups = [("1proc_2threads", 1, 2), ("1proc_1thread", 1, 1), ("2workers_1thread", 2, 1)]
    for repeat in range(args.repeats):
        for name, workers, threads in setups:
            figures = run(cfg, args.work, name, workers, threads)
            print(json.dumps({"bench": "distributed", "setup": name, "workers": workers, "threads": threads,
                              "repeat": repeat, "steps": args.steps, "global_batch": 64, **figures,
                              "machine": machine()}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
