#!/usr/bin/env python
"""The long fault cases (the fast ones are tests/test_reliability.py and tests/test_fuzz.py).

Prints one JSON line per case; exits 1 if any case fails. Cases:

- ``kills``: a small model trained while being SIGKILLed at random moments (some aimed at the
  moment a checkpoint is being written), resumed each time, then finished; its final weights
  and optimizer state are compared with an uninterrupted run of the same seed.
- ``translate``: 10,000 vs ``--lines`` (default 1,000,000) short lines piped through
  ``nmt translate``: peak resident memory of each, one output line per input line; then the
  same input into ``| head -n 5`` (must end quietly with exit 0).
- ``disk``: prepare, train and translate --output on tiny tmpfs mounts (user namespaces via
  ``unshare``): one error line each, nothing half-written, the last good checkpoint usable.
- ``fuzz``: the config and line-reading property tests with ``--fuzz-examples`` examples each,
  and ``nmt prepare`` on random hostile corpora.

    python scripts/stress.py                       # all cases, about 15 minutes on 2 cores
    python scripts/stress.py --cases kills --kills 20
    python scripts/stress.py --cases translate --lines 100000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from nmt.checkpoints import checkpoint_values

ROOT = Path(__file__).resolve().parent.parent
NMT = [sys.executable, "-m", "nmt.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def emit(case: str, ok: bool, **figures) -> bool:
    print(json.dumps({"case": case, "ok": ok, **figures}), flush=True)
    return ok


def setup(work: Path) -> Path:
    """A 3,000-pair slice of the bundled sample, prepared once; returns the config path."""
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "stress.yaml"
    if cfg_path.is_file() and (work / "prepared" / "manifest.json").is_file():
        return cfg_path
    with gzip.open(ROOT / "data" / "fra-eng-sample.tsv.gz", "rt", encoding="utf-8") as f:
        (work / "corpus.tsv").write_text("".join(next(f) for _ in range(3000)), encoding="utf-8")
    cfg = {"data": {"train_tsv": str(work / "corpus.tsv"), "prepared_dir": str(work / "prepared"),
                    "dev_size": 100, "test_size": 100, "sentencepiece": {"vocab_size": 500}},
           "model": {"embedding_dim": 64, "encoder_units": 128, "decoder_units": 256, "attention_units": 128,
                     "attentional_units": 256, "dropout": 0.2},
           "training": {"run_dir": str(work / "run"), "batch_size": 32, "max_steps": 120, "log_every": 1,
                        "checkpoint_every": 3, "validate_every": 30, "validate_max_sentences": 50,
                        "num_sampled": 128, "learning_rate": 0.005, "keep_checkpoints": 3},
           "decoding": {"batch_size": 64, "max_length_cap": 40}}
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    subprocess.run([*NMT, "prepare", "--config", str(cfg_path), "--overwrite"], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    return cfg_path


def logged_step(log: Path) -> int:
    if not log.is_file():
        return 0
    steps = [int(line.split()[1].split("/")[0]) for line in log.read_text().splitlines() if line.startswith("step ")]
    return steps[-1] if steps else 0


# --------------------------------------------------------------------------- kills
def case_kills(work: Path, cfg_path: Path, kills: int, seed: int) -> bool:
    import numpy as np

    rng = random.Random(seed)
    ref, run = work / "kills_ref", work / "kills_run"
    for d in (ref, run):
        shutil.rmtree(d, ignore_errors=True)
    subprocess.run([*NMT, "train", "--config", str(cfg_path), "--set", f"training.run_dir={ref}"], env=ENV,
                   check=True, capture_output=True)
    log, every, events = run / "train.log", 3, []
    for k in range(kills):
        cmd = [*NMT, "train", "--config", str(cfg_path), "--set", f"training.run_dir={run}"]
        if run.exists():
            cmd.append("--resume")
        start_step = logged_step(log)
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        target = start_step + rng.randint(1, 8)
        aim_at_save = k % 2 == 1
        in_save = False
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and logged_step(log) < target:
            time.sleep(0.005)
        if aim_at_save:  # wait for a save to begin: TensorFlow writes it under ckpt-N_temp
            while time.time() < deadline and proc.poll() is None:
                if any((run / "checkpoints").glob("*_temp*")):
                    in_save = True
                    break
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0, 0.3))
        killed_at = logged_step(log)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        resumed = [line for line in err.splitlines() if line.startswith(("resumed from", "warning: skipping"))]
        events.append({"kill": k + 1, "step_at_kill": killed_at, "during_save": in_save, "resume_log": resumed})
    # finish, then check what each restart restored
    done = subprocess.run([*NMT, "train", "--config", str(cfg_path), "--set", f"training.run_dir={run}", "--resume"],
                          env=ENV, capture_output=True, text=True)
    restarts = [line for line in (run / "train.log").read_text().splitlines()
                if line.startswith("resumed from") or line.startswith("resume: no checkpoint yet")]
    restored = [int(line.split(" at step ")[1].split()[0]) if " at step " in line else 0 for line in restarts]
    lost = [e["step_at_kill"] - r for e, r in zip(events, restored)]
    last = f"ckpt-{yaml.safe_load(cfg_path.read_text())['training']['max_steps']}"
    a, b = checkpoint_values(str(run / "checkpoints" / last)), checkpoint_values(str(ref / "checkpoints" / last))
    max_diff = max(float(np.max(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)))) for n in a)
    ok = (done.returncode == 0 and a.keys() == b.keys() and max_diff == 0.0 and all(0 <= x <= every for x in lost))
    return emit("kills", ok, kills=len(events), kills_during_save=sum(e["during_save"] for e in events),
                steps_lost_per_kill=lost, max_steps_lost_allowed=every, restarts=len(restarts),
                variables_compared=len(a), max_abs_weight_difference=max_diff, final_exit=done.returncode)


# --------------------------------------------------------------------------- translate
def peak_rss_mib(shell_cmd: str) -> tuple[float, float, int]:
    """Run ``shell_cmd`` under a fresh Python parent; return (peak RSS MiB of the largest child, seconds, rc)."""
    probe = ("import resource,subprocess,sys,time;t=time.time();"
             "r=subprocess.run(sys.argv[1],shell=True,executable='/bin/bash').returncode;"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,time.time()-t,r)")
    out = subprocess.run([sys.executable, "-c", probe, shell_cmd], env=ENV, capture_output=True, text=True)
    rss, secs, rc = out.stdout.split()[-3:]
    return int(rss) / 1024, float(secs), int(rc)


def case_translate(work: Path, cfg_path: Path, lines: int) -> bool:
    run = work / "kills_ref"
    if not (run / "checkpoints").is_dir():
        subprocess.run([*NMT, "train", "--config", str(cfg_path), "--set", f"training.run_dir={run}"], env=ENV,
                       check=True, capture_output=True)
    sources = [line.split("\t")[0] for line in (work / "corpus.tsv").read_text(encoding="utf-8").splitlines()]
    results, ok = {}, True
    for n in (10_000, lines):
        src = work / f"in_{n}.txt"
        with open(src, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(sources[i % len(sources)] + "\n")
        out = work / f"out_{n}.txt"
        rss, secs, rc = peak_rss_mib(f'{" ".join(NMT)} translate --model "{run}" < "{src}" > "{out}"')
        with open(out, "rb") as f:
            n_out = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        results[n] = {"lines_in": n, "lines_out": n_out, "peak_rss_mib": round(rss, 1), "seconds": round(secs, 1),
                      "lines_per_second": round(n / secs), "exit": rc}
        ok &= rc == 0 and n_out == n
        out.unlink()
    small, big = results[10_000], results[lines]
    growth = big["peak_rss_mib"] / small["peak_rss_mib"]
    ok &= growth < 1.1
    head = subprocess.run(f'{" ".join(NMT)} translate --model "{run}" < "{work / f"in_{lines}.txt"}" | head -n 5',
                          shell=True, executable="/bin/bash", env=ENV, capture_output=True, text=True)
    head_ok = head.returncode == 0 and head.stderr == "" and len(head.stdout.splitlines()) == 5
    for n in (10_000, lines):
        (work / f"in_{n}.txt").unlink()
    return emit("translate", ok and head_ok, small=small, large=big, rss_growth=round(growth, 3),
                head_exit=head.returncode, head_stderr=head.stderr[-200:])


# --------------------------------------------------------------------------- disk
def in_small_disk(mount: Path, size_kib: int, script: str) -> subprocess.CompletedProcess:
    """Run a shell ``script`` with ``mount`` on a fresh tmpfs of ``size_kib`` (a private mount namespace)."""
    mount.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           f'mount -t tmpfs -o size={size_kib}k tmpfs "{mount}" && {script}'],
                          env=ENV, capture_output=True, text=True)


def case_disk(work: Path, cfg_path: Path) -> bool:
    if shutil.which("unshare") is None or in_small_disk(work / "disk", 64, "true").returncode != 0:
        return emit("disk", True, skipped="cannot mount a tmpfs here (no unprivileged user namespaces)")
    nmt, disk, ok, figures = " ".join(NMT), work / "disk", True, {}
    # prepare: the SentencePiece model alone is larger than the disk
    p = in_small_disk(disk, 64, f'{nmt} prepare --config "{cfg_path}" --set data.prepared_dir="{disk}/prep"; '
                                f'rc=$?; echo "left: $(ls -A "{disk}")"; exit $rc')
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    figures["prepare"] = {"exit": p.returncode, "error": last, "left_on_disk": p.stdout.strip()}
    ok &= p.returncode == 1 and "No space left on device" in last and p.stdout.strip() == "left:"
    # train until the disk fills (room for the run's small files and about two checkpoints), then
    # translate with the last good checkpoint from the same disk
    ckpt = max(f.stat().st_size for f in (work / "kills_ref" / "checkpoints").glob("ckpt-*.data-*"))
    size_kib = (2 * ckpt + 2 * (work / "prepared" / "spm.model").stat().st_size) // 1024 + 64
    err_file = work / "train_disk.err"
    t = in_small_disk(disk, size_kib, f'{nmt} train --config "{cfg_path}" --set training.run_dir="{disk}/run" '
                                      f'--set training.max_steps=100000 --set training.keep_checkpoints=100000 '
                                      f'--set training.validate_every=100000 2>"{err_file}"; rc=$?; '
                                      f'echo "partial saves left: $(ls -A "{disk}/run/checkpoints" | grep -c _temp)"; '
                                      f'echo "hello" | {nmt} translate --model "{disk}/run" --checkpoint last '
                                      f'>/dev/null && echo "translate: ok"; exit $rc')
    err = err_file.read_text()
    last = err.strip().splitlines()[-1] if err.strip() else ""
    figures["train"] = {"exit": t.returncode, "tmpfs_kib": size_kib, "error": last,
                        "after": t.stdout.strip().splitlines() + t.stderr.strip().splitlines()[-1:]}
    ok &= (t.returncode == 1 and "No space left on device" in last and "last good checkpoint is " in last
           and "partial saves left: 0" in t.stdout and "translate: ok" in t.stdout and "Traceback" not in err)
    # translate --output onto a disk too small for it: the partial output is removed
    run = work / "kills_ref"
    if (run / "checkpoints").is_dir():
        src = work / "in_disk.txt"
        src.write_text("the cat is here\n" * 20000, encoding="utf-8")
        o = in_small_disk(disk, 16, f'{nmt} translate --model "{run}" --input "{src}" --output "{disk}/out.txt"; '
                                    f'rc=$?; echo "left: $(ls -A "{disk}")"; exit $rc')
        last = o.stderr.strip().splitlines()[-1] if o.stderr.strip() else ""
        figures["translate"] = {"exit": o.returncode, "error": last, "left_on_disk": o.stdout.strip()}
        ok &= o.returncode == 1 and "No space left on device" in last and o.stdout.strip() == "left:"
        src.unlink()
    return emit("disk", ok, **figures)


# --------------------------------------------------------------------------- fuzz
def case_fuzz(work: Path, examples: int, corpora: int, seed: int) -> bool:
    start = time.time()
    env = {**ENV, "NMT_FUZZ_EXAMPLES": str(examples)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                            "config or text or read_lines", str(ROOT / "tests" / "test_fuzz.py")],
                           env=env, capture_output=True, text=True, cwd=ROOT)
    property_seconds = time.time() - start
    from click.testing import CliRunner

    from nmt.cli import main

    rng = random.Random(seed)
    junk = [b"\r\n", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe\xfd", b"\t", b"\t\t", b"  ", b"\xe2\x80\x8b",
            b"x" * 5000, "é".encode(), "日本語".encode()]
    outcomes: dict[str, int] = {}
    failures = []
    for i in range(corpora):
        lines = []
        for j in range(rng.randint(0, 400)):
            if rng.random() < 0.8:
                lines.append(b"sentence %d here\tphrase %d ici" % (j, j))
            else:
                side = [b"".join(rng.choice(junk) if rng.random() < 0.7 else bytes([rng.randrange(256)])
                                 for _ in range(rng.randint(0, 8))).replace(b"\n", b"") for _ in range(2)]
                lines.append(side[0] + (b"\t" if rng.random() < 0.9 else b"") + side[1])
        src = work / f"fuzz_{i}.tsv"
        src.write_bytes(b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b""))
        out = work / f"fuzz_out_{i}"
        policy = rng.choice(["error", "skip", "replace"])
        r = CliRunner().invoke(main, ["prepare", "--tsv", str(src), "--out", str(out), "--vocab-size", "40",
                                      "--set", "data.dev_size=5", "--set", "data.test_size=5",
                                      "--on-invalid-utf8", policy])
        err = r.stderr.strip()
        clean = (r.exit_code == 0 and (out / "manifest.json").is_file()) or (
            r.exit_code in (1, 2) and len(err.splitlines()) == 1 and err.startswith("error: ")
            and "internal error" not in err and not out.exists())
        kind = "ok" if r.exit_code == 0 else re.sub(r"\d+", "N", err.split(": ", 2)[-1].split(" (")[0])[:50]
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if not clean:
            failures.append({"corpus": str(src), "exit": r.exit_code, "stderr": err[-300:]})
        else:
            src.unlink()
        shutil.rmtree(out, ignore_errors=True)
    ok = tests.returncode == 0 and not failures
    return emit("fuzz", ok, property_tests=tests.stdout.strip().splitlines()[-1:],
                property_examples_each=examples, property_seconds=round(property_seconds, 1),
                prepare_corpora=corpora, prepare_outcomes=outcomes, prepare_failures=failures[:5])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="kills,translate,disk,fuzz", help="comma-separated subset")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "stress")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--fuzz-examples", type=int, default=3000)
    ap.add_argument("--fuzz-corpora", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = setup(args.work)
    ok = True
    for case in args.cases.split(","):
        if case == "kills":
            ok &= case_kills(args.work, cfg, args.kills, args.seed)
        elif case == "translate":
            ok &= case_translate(args.work, cfg, args.lines)
        elif case == "disk":
            ok &= case_disk(args.work, cfg)
        elif case == "fuzz":
            ok &= case_fuzz(args.work, args.fuzz_examples, args.fuzz_corpora, args.seed)
        else:
            ap.error(f"unknown case {case!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
