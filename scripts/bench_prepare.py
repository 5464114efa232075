#!/usr/bin/env python
"""Time ``nmt prepare`` and print one JSON line per corpus.

Default: Multi30k en-de (train/val/test2016) from ../shared/data/multi30k (or the folder
``NMT_MULTI30K`` names, see ``benchdata.py``), and the full Tatoeba fra-eng TSV from
../shared/data/anki, each when present (a missing one is named on stderr). ``--quick``: the
bundled sample only (a few seconds).

    python scripts/bench_prepare.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nmt.config import config_from_dict
from nmt.prepare import prepare
from nmt.sysinfo import machine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import multi30k_data, multi30k_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def corpora(quick: bool) -> dict[str, dict]:
    out = {"bundled_fra_eng_sample": {"train_tsv": str(ROOT / "data" / "fra-eng-sample.tsv.gz"),
                                      "dev_size": 500, "test_size": 500}}
    if quick:
        return out
    m30k, missing = multi30k_data()
    if missing:
        print(f"skipped: {multi30k_dir()}: Multi30k not found (set NMT_MULTI30K)", file=sys.stderr)
    else:
        out["multi30k_en_de"] = m30k
    a = SHARED / "anki" / "fra-eng" / "fra.txt"
    if not a.is_file():
        print(f"skipped: {a}: not found", file=sys.stderr)
    else:
        out["anki_fra_eng_full"] = {"train_tsv": str(a)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bundled sample only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    for name, data in corpora(args.quick).items():
        times, summary = [], None
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = config_from_dict({"data": {**data, "prepared_dir": str(Path(tmp) / "out")}})
                start = time.perf_counter()
                summary = prepare(cfg, log=lambda s: None)
                times.append(time.perf_counter() - start)
        print(json.dumps({"bench": "prepare", "corpus": name, "seconds_median": round(statistics.median(times), 2),
                          "seconds_all": [round(t, 2) for t in times], "pairs_read": summary.read,
                          "kept": summary.kept, "dropped": summary.dropped, "vocab": summary.src_vocab,
                          **machine()}), flush=True)


if __name__ == "__main__":
    main()
