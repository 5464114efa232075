#!/usr/bin/env python
"""Start-up: what a fresh ``nmt train`` and ``nmt translate`` pay before their first step, side by side
for one or more source trees (this checkout and, say, an older commit in a ``git worktree``).

Each measurement is a fresh process that imports ``nmt`` from the tree it is given, alternated over the
trees ``--repeats`` times. A ``train`` child times importing TensorFlow, building the ``Trainer`` for the
reference model on Multi30k en-de (vocabulary 8,000, sampled softmax 1,024; data, model, optimizer,
compiled steps) and its first step (trace and first run); a ``translate`` child times building the
``Translator`` for ``--model`` (config, vocabularies, model, checkpoint) and its first one-line
translation (normalising, tracing, the call). One JSON line per child, then per tree and figure the
median, and its ratio to the first tree's.

    git worktree add /tmp/before <commit>
    python scripts/bench_startup.py --model runs/multi30k_en_de --trees . /tmp/before --repeats 3
    python scripts/bench_startup.py --quick       # tiny model on the bundled sample, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "A man in a blue shirt is standing on a ladder."
FIGURES = {"train": ("import_seconds", "build_seconds", "first_step_seconds"),
           "translate": ("import_seconds", "load_seconds", "first_translation_seconds")}


def child(kind: str, prepared: str, model: str, quick: bool) -> dict:
    """One measurement in this process (``nmt`` imported from the tree on ``sys.path[0]``)."""
    start = time.perf_counter()
    from nmt.sysinfo import tensorflow_environment

    tensorflow_environment(quiet=True)
    import tensorflow  # noqa: F401

    imported = time.perf_counter()
    if kind == "translate":
        from nmt.translate import Translator

        translator = Translator(model)
        loaded = time.perf_counter()
        translator.translate([SENTENCE])
        return {"import_seconds": imported - start, "load_seconds": loaded - imported,
                "first_translation_seconds": time.perf_counter() - loaded}
    import tempfile

    from benchdata import REFERENCE_MODEL, TINY_MODEL

    from nmt.config import config_from_dict
    from nmt.training import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict({"data": {"prepared_dir": prepared}, "model": TINY_MODEL if quick else REFERENCE_MODEL,
                                "training": {"run_dir": tmp, "num_sampled": 128 if quick else 1024}})
        trainer = Trainer(cfg, overwrite=True, log=lambda s: None)
        built = time.perf_counter()
        trainer._train_step(*trainer.planner.make_batch(trainer.planner.plan(0)[0]))
        return {"import_seconds": imported - start, "build_seconds": built - imported,
                "first_step_seconds": time.perf_counter() - built}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=[str(ROOT)], help="source trees holding nmt/")
    parser.add_argument("--model", help="run directory for the translate children (default: none, skipped)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny model on the bundled sample (< 1 minute)")
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    parser.add_argument("--child", nargs=4, metavar=("KIND", "PREPARED", "MODEL", "QUICK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, prepared, model, quick = args.child
        print(json.dumps({k: round(v, 3) for k, v in child(kind, prepared, model, quick == "1").items()}))
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    trees = [str(Path(t).resolve()) for t in args.trees]
    missing = next((t for t in trees if not (Path(t) / "nmt" / "__init__.py").is_file()), None)
    if missing:
        parser.error(f"--trees: {missing} holds no nmt/__init__.py")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchdata import prepared_dir

    from nmt.sysinfo import machine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prep = prepared_dir(work, 500 if args.quick else 8000, args.quick)
    model = str(Path(args.model).resolve()) if args.model else None
    if args.quick and not model:  # a tiny run to load, trained once by this checkout
        from benchdata import quick_trained_run

        model = str(quick_trained_run(work, "run_quick_startup", 5)[0])
    kinds = ["train"] + (["translate"] if model else [])
    results: dict[tuple[str, str], list[dict]] = {}
    info = {"quick": args.quick, **machine()}
    for repeat in range(args.repeats):
        for kind in kinds:
            for tree in trees:
                code = (f"import sys; sys.path[:0] = [{tree!r}, {str(Path(__file__).resolve().parent)!r}]; "
                        f"sys.argv = ['bench_startup.py', '--child', {kind!r}, {str(prep)!r}, {str(model)!r}, "
                        f"{'1' if args.quick else '0'!r}]; import runpy; "
                        f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
                out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                     cwd=tree).stdout
                row = json.loads(out.strip().splitlines()[-1])
                results.setdefault((kind, tree), []).append(row)
                print(json.dumps({"bench": "startup", "kind": kind, "tree": tree, "repeat": repeat, **row, **info}),
                      flush=True)
    for kind in kinds:
        first = {f: statistics.median(r[f] for r in results[(kind, trees[0])]) for f in FIGURES[kind]}
        for tree in trees:
            medians = {f: round(statistics.median(r[f] for r in results[(kind, tree)]), 3) for f in FIGURES[kind]}
            ratios = {f"{f}_vs_first_tree": round(medians[f] / first[f], 3) for f in FIGURES[kind] if first[f] > 0}
            print(json.dumps({"bench": "startup_median", "kind": kind, "tree": tree, "repeats": args.repeats,
                              **medians, **ratios, **info}), flush=True)


if __name__ == "__main__":
    main()
