#!/usr/bin/env python
"""Test BLEU after the same wall time: nmt, JoeyNMT 2.3.0 and OpenNMT-tf 2.32.0 on Multi30k en-de.

What a user with 2 cores and a fixed amount of time gets from each toolkit. Every toolkit trains
``bench_peers.py``'s setting (the same pieces of Multi30k en-de train, the same reference model, Adam
1e-3 at a constant rate, batches of 64 sentences, dropout 0.2, the same threads; each toolkit's own
defaults otherwise, nmt's sampled softmax of 1,024 candidates included) for ``--minutes`` of wall time
counted from the launch of its process (imports, data loading and graph building count, as they do for
a user), and is then killed (SIGKILL: no toolkit gets to save on the way out). Each saves a checkpoint
about every 40 seconds of its own training on 2 cores of the Zen 5 CPU (``CHECKPOINT_STEPS``, from
its measured steps a second; ``--checkpoint-steps`` overrides), so each loses on average half an
interval; JoeyNMT validates on the first 100 dev sentences at each of its checkpoints (its only way to
save one). Every checkpoint is kept; at each of ``--points`` evenly spaced times (the deadline the
last) the last checkpoint written before it (by its file's time) greedy-decodes test2016 (1,000
sentences, up to 80 output pieces, one batch of 64 at a time for the peers, nmt's default decoding
layout for nmt), the pieces are joined by the shared SentencePiece model, and sacreBLEU scores them
against the prepared references (BLEU and chrF, default tokenisation): BLEU against wall time.

    python scripts/bench_quality.py --minutes 10                        # all three, one after another
    python scripts/bench_quality.py --minutes 10 --repeats 3            # three rounds, alternated; medians
    python scripts/bench_quality.py --minutes 10 --toolkits nmt joeynmt
    python scripts/bench_quality.py --quick                             # nmt only, 0.5 minutes on the sample

Prints one JSON line per toolkit, time and repeat, then a Markdown table (BLEU and checkpoint step per time;
with ``--repeats``, the medians, also as JSON lines);
``scripts/plot_quality.py`` draws BLEU against minutes from the JSON lines. The peers' virtual environments are
``bench_peers.py``'s (created on first use under --venvs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import (  # noqa: E402
    BATCH,
    JOEY_TRANSLATE,
    ROOT,
    ensure_venv,
    joey_config,
    onmt_command,
    onmt_config,
    run,
    thread_env,
    write_piece_data,
)
from benchdata import REFERENCE_MODEL, TINY_MODEL, prepared_dir  # noqa: E402

#: steps between checkpoints: about 40 s of each toolkit's training on 2 Zen 5 cores (nmt ~11 steps/s,
#: OpenNMT-tf ~4.5, JoeyNMT ~1)
CHECKPOINT_STEPS = {"nmt": 500, "opennmt-tf": 200, "joeynmt": 40}
MAX_OUTPUT = 80  # output pieces at most when decoding test2016


def train_for(cmd: list[str], env: dict, log: Path, seconds: float) -> tuple[float, float]:
    """Run a training command for ``seconds`` of wall time from its launch, then kill its process group
    (SIGKILL); returns ``(seconds it ran, launch time as time.time())``. Stops the script if the command
    fails before the deadline."""
    launched, start = time.time(), time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = 0
    if code != 0:
        sys.exit(f"bench_quality: {' '.join(cmd[:3])}... failed (exit {code}); see {log}")
    return time.perf_counter() - start, launched


def written(paths: list[tuple[int, Path]], launched: float) -> list[tuple[int, float, Path]]:
    """``(step, seconds after launch, path)`` of each checkpoint, by its file's modification time, in step order."""
    return sorted((step, path.stat().st_mtime - launched, path) for step, path in paths)


def tf_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, index file)`` of every TensorFlow checkpoint in ``folder`` (nmt's and OpenNMT-tf's ``ckpt-N``)."""
    from nmt.checkpoints import checkpoint_number, list_checkpoints

    return [(checkpoint_number(prefix), Path(f"{prefix}.index")) for prefix in list_checkpoints(folder)]


def nmt_quality(prep: Path, work: Path, seconds: float, every: int, env: dict, threads: int, model: dict) -> dict:
    """Train nmt for ``seconds``, keeping every checkpoint; ``decode`` translates test2016 (as pieces) with one."""
    import yaml

    run_dir = work / "nmt_run"
    cfg = {"data": {"prepared_dir": str(prep)}, "model": model,
           "training": {"run_dir": str(run_dir), "batch_size": BATCH, "num_sampled": 1024, "learning_rate": 0.001,
                        "max_steps": 10**9, "log_every": 100, "validate_every": 10**8, "checkpoint_every": every,
                        "keep_checkpoints": 10**6, "threads": threads},
           "decoding": {"beam_size": 1, "batch_size": BATCH, "cpu_threads": threads}}
    cfg_path = work / "nmt.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / "nmt.log"
    log.write_text("")
    nmt = [sys.executable, "-c", "from nmt.cli import main; main()"]
    ran, launched = train_for([*nmt, "train", "--config", str(cfg_path), "--overwrite"], env, log, seconds)

    def decode(index: Path) -> Path:
        hyp = work / f"nmt_{index.stem}.hyp"
        run([*nmt, "translate", "--model", str(run_dir), "--checkpoint", str(index.with_suffix("")), "--beam", "1",
             "--pieces", "--input", str(work / "pieces" / "decode_raw.en"), "--output", str(hyp)], env, log)
        return hyp

    return {"seconds": ran, "checkpoints": written(tf_checkpoints(run_dir / "checkpoints"), launched),
            "decode": decode, "log": log}


def joey_quality(python: Path, work: Path, seconds: float, every: int, env: dict, threads: int) -> dict:
    """Train JoeyNMT for ``seconds``, keeping every checkpoint; ``decode`` translates test2016 with one."""
    import yaml

    cfg = joey_config(work, 10**9, threads)
    cfg["training"].update(validation_freq=every, keep_best_ckpts=-1, logging_freq=max(1, min(100, every // 2)))
    cfg["testing"].update(max_output_length=MAX_OUTPUT, min_output_length=1)
    cfg_path = work / "joey.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = work / "joey.log"
    log.write_text("")
    shutil.rmtree(work / "joey_run", ignore_errors=True)
    ran, launched = train_for([str(python), "-m", "joeynmt", "train", str(cfg_path), "--skip-test"], env, log, seconds)
    # complete checkpoints only: latest.ckpt moves to a checkpoint once it is saved (a kill may cut the next one)
    latest = work / "joey_run" / "latest.ckpt"
    done = int(latest.resolve().stem) if latest.is_symlink() else -1
    found = [(int(p.stem), p) for p in (work / "joey_run").glob("*.ckpt")
             if p.stem.isdigit() and not p.is_symlink() and int(p.stem) <= done]
    driver = work / "joey_translate.py"
    driver.write_text(JOEY_TRANSLATE)

    def decode(ckpt: Path) -> Path:
        cfg["testing"]["load_model"] = str(ckpt)
        cfg_path.write_text(yaml.safe_dump(cfg))
        hyp = work / f"joey_{ckpt.stem}.hyp"  # translate's -o fails in 2.3.0: stdout instead
        run([str(python), str(driver), str(cfg_path)], env, log, stdin=work / "pieces" / "decode.en", stdout=hyp)
        return hyp

    return {"seconds": ran, "checkpoints": written(found, launched), "decode": decode, "log": log}


def onmt_quality(python: Path, work: Path, seconds: float, every: int, env: dict) -> dict:
    """Train OpenNMT-tf for ``seconds``, keeping every checkpoint; ``decode`` translates test2016 with one."""
    pieces = work / "pieces"
    run_dir = work / "onmt_run"
    cfg = onmt_config(run_dir, pieces, max_step=10**9, save_every=every, summary_every=100, min_length=0,
                      max_length=MAX_OUTPUT, keep=10**6)
    log = work / "onmt.log"
    onmt_main = onmt_command(python, work, cfg, log)
    ran, launched = train_for([*onmt_main, "train"], env, log, seconds)

    def decode(index: Path) -> Path:
        hyp = work / f"onmt_{index.stem}.hyp"
        run([*onmt_main, "--checkpoint_path", str(index.with_suffix("")), "infer", "--features_file",
             str(pieces / "decode.en"), "--predictions_file", str(hyp)], env, log)  # --checkpoint_path: global
        return hyp

    return {"seconds": ran, "checkpoints": written(tf_checkpoints(run_dir), launched), "decode": decode, "log": log}


def score(hyp: Path, refs: list[str], sp) -> dict:
    """BLEU and chrF (sacreBLEU defaults) of a file of space-separated pieces against ``refs``."""
    import sacrebleu

    hyps = [sp.decode_pieces(line.split()) for line in hyp.read_text(encoding="utf-8").splitlines()]
    if len(hyps) != len(refs):
        sys.exit(f"bench_quality: {hyp} has {len(hyps)} lines for {len(refs)} references")
    bleu, chrf = sacrebleu.corpus_bleu(hyps, [refs]), sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "example": hyps[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall time each toolkit trains, from launch")
    parser.add_argument("--toolkits", nargs="+", default=["nmt", "joeynmt", "opennmt-tf"],
                        choices=["nmt", "joeynmt", "opennmt-tf"])
    parser.add_argument("--checkpoint-steps", type=int, default=0,
                        help="steps between checkpoints for every toolkit (0: CHECKPOINT_STEPS, per toolkit)")
    parser.add_argument("--points", type=int, default=5,
                        help="score the last checkpoint written before each of this many evenly spaced times")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="train and score every toolkit this many times, alternated; the table gives medians")
    parser.add_argument("--quick", action="store_true",
                        help="nmt only, a tiny model for 0.5 minutes on the bundled sample (checks the script)")
    parser.add_argument("--venvs", default=str(ROOT / "bench_out" / "venvs"))
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "quality"))
    args = parser.parse_args()
    if min(args.minutes, args.threads, args.points, args.repeats) <= 0 or args.checkpoint_steps < 0:
        parser.error("--minutes, --threads, --points and --repeats must be positive, --checkpoint-steps at least 0")
    if args.quick:
        args.minutes, args.toolkits = 0.5, ["nmt"]
        args.checkpoint_steps = args.checkpoint_steps or 20

    from nmt.dataset import PreparedData
    from nmt.sysinfo import machine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prep = prepared_dir(work.parent, 500 if args.quick else 8000, quick=args.quick)
    info = write_piece_data(prep, work / "pieces")  # decode.en / decode_raw.en: the test split once, pieces / text
    data = PreparedData(prep)
    refs = data.text("test", "tgt")
    sp = data.vocabs()[1].sp
    env = thread_env(args.threads)
    seconds = args.minutes * 60
    host = machine()
    print(json.dumps({"bench": "quality_setup", "threads": args.threads, "minutes": args.minutes, **info, **host}),
          flush=True)
    venvs = Path(args.venvs)
    model = TINY_MODEL if args.quick else REFERENCE_MODEL
    runners = {
        "nmt": lambda every: nmt_quality(prep, work, seconds, every, env, args.threads, model),
        "joeynmt": lambda every: joey_quality(
            ensure_venv(venvs / "joeynmt", [["torch==2.13.0"], ["joeynmt==2.3.0", "importlib_metadata"]]),
            work, seconds, every, env, args.threads),
        "opennmt-tf": lambda every: onmt_quality(
            ensure_venv(venvs / "opennmt-tf", [["tensorflow==2.13.1", "opennmt-tf==2.32.0"]]),
            work, seconds, every, env),
    }
    points = [seconds * (k + 1) / args.points for k in range(args.points)]
    rows: dict[str, list[dict]] = {name: [] for name in args.toolkits}
    for repeat in range(args.repeats):
        turn = repeat % len(args.toolkits)  # alternated: each repeat starts with the next toolkit
        for name in args.toolkits[turn:] + args.toolkits[:turn]:
            result = runners[name](args.checkpoint_steps or CHECKPOINT_STEPS[name])
            for row in score_points(name, result, points, refs, sp):
                row.update(repeat=repeat + 1, threads=args.threads, **host)
                rows[name].append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
    print_table(rows, points, args.repeats, {"threads": args.threads, **host})


def score_points(name: str, result: dict, points: list[float], refs: list[str], sp) -> list[dict]:
    """The row of each point in ``points`` (seconds) from one training ``result``: the last checkpoint
    written before it, decoded and scored (a checkpoint that is the last at two points is decoded once)."""
    scored: dict[Path, dict] = {}
    rows = []
    for point in points:
        before = [c for c in result["checkpoints"] if c[1] <= point]
        if not before:
            if point == points[-1]:
                sys.exit(f"bench_quality: {name} wrote no checkpoint in {result['seconds']:.0f} s; "
                         f"see {result['log']}")
            continue
        step, at, path = before[-1]
        if path not in scored:
            scored[path] = score(result["decode"](path), refs, sp)
        rows.append({"bench": "quality", "toolkit": name, "minutes": round(point / 60, 3), "checkpoint_step": step,
                     "checkpoint_seconds": round(at, 1), **scored[path], "seconds_run": round(result["seconds"], 1)})
    return rows


def print_table(rows: dict[str, list[dict]], points: list[float], repeats: int, machine: dict) -> None:
    """A Markdown table of BLEU (checkpoint step) per toolkit and time; with several repeats, the
    median over them (and its JSON line, ``quality_median``, with ``machine``), with the lowest and highest."""
    print("\n| toolkit | " + " | ".join(f"{p / 60:g} min" for p in points) + " |")
    print("|---|" + "---:|" * len(points))
    medians = []
    for name, found in rows.items():
        cells = []
        for point in points:
            mine = [r for r in found if r["minutes"] == round(point / 60, 3)]
            if not mine:
                cells.append("-")
                continue
            bleus, steps = [r["bleu"] for r in mine], [r["checkpoint_step"] for r in mine]
            bleu, step = statistics.median(bleus), statistics.median(steps)
            if repeats > 1:
                medians.append({"bench": "quality_median", "toolkit": name, "minutes": round(point / 60, 3),
                                "bleu_median": round(bleu, 2), "bleus": bleus, "checkpoint_steps": steps, **machine})
                cells.append(f"{bleu:.2f} ({min(bleus):.2f}-{max(bleus):.2f}; {step:,.0f})")
            else:
                cells.append(f"{bleu:.2f} ({step:,})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if repeats > 1:
        print(f"\n(median over {repeats} repeats (lowest-highest; median checkpoint step))")
        for row in medians:
            print(json.dumps(row))

if __name__ == "__main__":
    main()
