"""The benchmark scripts' quick modes run (in-process, so TensorFlow is imported once) and print JSON lines."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, invoke


def run_main(name: str, *args: str) -> None:
    """Run ``scripts/<name>`` as ``__main__`` in this process with ``args`` as its command line."""
    argv, sys.argv = sys.argv, [name, *args]
    try:
        runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")
    finally:
        sys.argv = argv


def usage_error(name: str, *args: str, capsys) -> tuple[int, list[str]]:
    """Run a script expected to stop with a usage error: ``(exit code, stderr lines)``."""
    with pytest.raises(SystemExit) as stop:
        run_main(name, *args)
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


def run_script(name: str, *args: str, capsys, tmp_path) -> list[dict]:
    run_main(name, *args)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rows and all(row["cores"] for row in rows)
    return rows


@pytest.fixture(scope="module")
def bench_work(tmp_path_factory) -> Path:
    """One ``--work`` folder for the quick modes: the bundled sample is prepared there by the first
    script that needs it and read by the others (``benchdata.prepared_dir``)."""
    return tmp_path_factory.mktemp("bench_work")


def test_bench_prepare_quick(capsys, tmp_path):
    rows = run_script("bench_prepare.py", "--quick", capsys=capsys, tmp_path=tmp_path)
    assert rows[0]["pairs_read"] == 30000 and rows[0]["seconds_median"] > 0
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    family = next((line.split(":")[1].strip() for line in lines if line.startswith("cpu family")), None)
    if family:  # the CPU's generation, not only its name
        assert rows[0]["cpu_family_model"].split("/")[0] == family


@pytest.mark.parametrize("script,extra", [("bench_train.py", ["--placements", "post", "--losses", "sampled"]),
                                          ("bench_translate.py", ["--profile", "100", "--beams", "1",
                                                                  "--batch-sizes", "16",
                                                                  "--compact-fractions", "0.1", "0.5"]),
                                          ("bench_limit.py", ["--steps", "5", "--profile", "2",
                                                              "--precision", "bfloat16", "--optimizer", "lazy_adam",
                                                              "--dropout", "0.3", "--rounds", "2"]),
                                          ("bench_train.py", ["--placements", "post", "--parts", "2",
                                                              "--precisions", "float32", "bfloat16",
                                                              "--optimizers", "adam", "--repeats", "1",
                                                              "--losses", "full"])])
def test_bench_quick_modes(script, extra, bench_work, capsys, tmp_path):
    rows = run_script(script, "--quick", "--work", str(bench_work), *extra, capsys=capsys, tmp_path=tmp_path)
    if "--parts" in extra:  # nmt alone, a fresh process per precision and optimizer (parallel_parts 2)
        # Two processes (float32 and bfloat16, the full softmax), each importing TensorFlow afresh. Lazy
        # Adam's path through the scripts is exercised by bench_limit.py's and bench_optimizer.py's quick
        # modes, the sampled loss by the in-process run below (one loss each: the suite's time).
        runs = {(r["precision"], r["optimizer"], r["loss"]): r["tokens_per_second"]
                for r in rows if r["bench"] == "train" and r["parallel_parts"] == 2}
        settings = {(p, "adam") for p in ("float32", "bfloat16")}
        assert set(runs) == {(*s, "full") for s in settings} and min(runs.values()) > 0
        children = [r for r in rows if r["bench"] == "train"]  # fresh processes: the start-up a user sees
        assert all(r["build_seconds"] > 0 and r["first_step_seconds"] > 0 for r in children)
        summary = {(r["precision"], r["optimizer"], r["num_sampled"] > 0): r
                   for r in rows if r["bench"] == "train_parts"}
        assert set(summary) == {(*s, False) for s in settings}
        ratio = "speedup_vs_parts_2_float32"  # one optimizer: the baseline is named by parts and precision
        assert all(r[ratio] == 1.0 for (p, q, _), r in summary.items() if (p, q) == ("float32", "adam"))
        assert all(r[ratio] > 0 for r in summary.values())
    elif script == "bench_train.py":
        toolkits = ("nmt", "plain-keras-step", "nmt-keras-gru-loop")
        assert {(r["toolkit"], r["loss"]) for r in rows} == {(t, "sampled") for t in toolkits}
        assert all(r["tokens_per_second"] > 0 for r in rows)
        nmt_rows = [r for r in rows if r["toolkit"] != "plain-keras-step"]
        assert all(r["build_seconds"] > 0 and r["first_step_seconds"] > 0 for r in nmt_rows)
    elif script == "bench_limit.py":
        peaks: dict = {}  # per round, the largest rate per dtype
        for r in rows:
            if r["bench"] == "matmul":
                per = peaks.setdefault(r["round"], {})
                per[r["dtype"]] = max(per.get(r["dtype"], 0.0), r["gflops"])
        assert sorted(peaks) == [1, 2] and all(set(p) == {"float32", "bfloat16"} for p in peaks.values())
        steps = [r for r in rows if r["bench"] == "train_step_flops"]
        assert [s["round"] for s in steps] == [1, 2]
        for step in steps:  # each round against the peaks measured just before it
            p = peaks[step["round"]]
            assert step["precision"] == "bfloat16" and step["matmul_peak_gflops"] == p["bfloat16"]
            assert step["optimizer"] == "lazy_adam" and step["dropout"] == 0.3
            assert 0 < step["fraction_of_peak"] < 1 and step["achieved_gflops"] > 0
            assert abs(step["fraction_of_float32_peak"] - step["achieved_gflops"] / p["float32"]) < 0.002
            assert step["ceiling_tokens_per_second"] > step["target_tokens_per_second"]
        median = next(r for r in rows if r["bench"] == "train_step_flops_median")
        fractions = [s["fraction_of_peak"] for s in steps]
        assert median["rounds"] == 2 and median["fraction_of_peak_per_round"] == fractions
        assert abs(median["fraction_of_peak"] - sum(fractions) / 2) < 1e-9  # the median of two
        assert median["gflop_per_step"] == steps[0]["gflop_per_step"] == steps[1]["gflop_per_step"]
        latest = peaks[2]  # the last round's, as decoding and the profile use
        decode = next(r for r in rows if r["bench"] == "greedy_decode_flops")  # held to exactly 30 steps
        assert (decode["sentences"], decode["decoder_steps"]) == (100, 30)
        assert 0 < decode["fraction_of_peak"] < 1 and decode["matmul_peak_gflops"] == latest["float32"]
        assert decode["ceiling_sentences_per_second"] > decode["sentences_per_second"] > 0
        summary = next(r for r in rows if r["bench"] == "step_profile_summary")  # the same batches unprofiled
        assert summary["threads"] >= 1 and summary["unprofiled_ms_per_step"] > 0 and summary["gflop_per_step"] > 0
        assert 0 < summary["matmul_share_of_thread_time"] and 0 < summary["matmul_efficiency"]
        assert 0 < summary["op_share_of_thread_time_profiled"] <= 1.01
        profile = [r for r in rows if r["bench"] == "step_profile"]
        assert profile[0]["group"] == "total" and profile[0]["cpu_ms_per_step"] > 0
        op_types = {r["name"] for r in profile if r["group"] == "op_type"}
        assert any("MatMul" in name for name in op_types), op_types  # the trace was read, op by op
    else:
        profiled = [r for r in rows if r["bench"] == "translate_profile"]  # --profile: after the timed rows
        rows = [r for r in rows if r["bench"] == "translate"]
        methods = [r["method"] for r in rows]
        # --beams 1: each beam size is one more trace of every row's decoder; the script's code is the same
        assert methods[0] == "nmt greedy" and "baseline" in methods[1]
        assert rows[1]["outputs_equal_to_compiled_greedy"] == "5/5"
        listed = [r for r in rows if r["method"].endswith("shortlist 10/100")]
        assert [r["method"] for r in listed] == ["nmt greedy, shortlist 10/100"]
        assert all(r["sentences_per_second"] > 0 and r["speedup_vs_full_vocabulary"] > 0 for r in listed)
        assert all(0 < r["median_shortlist_size_one_sentence"] <= r["vocab"] for r in listed)
        tabled = [r for r in rows if r["method"].endswith("input table")]  # made once at load, same outputs
        assert [r["method"] for r in tabled] == ["nmt greedy, input table"]
        assert all(r["outputs_equal_to_without_table"] == "100/100" and r["speedup_vs_without_table"] > 0
                   for r in tabled)
        transposed = [r for r in rows if r["method"].endswith("transposed few-row kernels")]  # the same products
        assert [r["method"] for r in transposed] == ["nmt greedy, transposed few-row kernels"]
        assert int(transposed[0]["outputs_equal_to_plain_kernels"].split("/")[0]) >= 98  # float order only
        assert transposed[0]["speedup_vs_plain_kernels"] > 0 and "this_cpu_uses_transposed" in transposed[0]
        gathered = [r for r in rows if r["method"].endswith("ended gathered out")]  # against whole batches
        assert [(r["compact_fraction"], r["outputs_equal_to_whole_batches"]) for r in gathered] == [
            (0.1, "100/100"), (0.5, "100/100")] and all(r["speedup_vs_whole_batches"] > 0 for r in gathered)
        bf16 = [r for r in rows if r["method"].endswith("bfloat16")]  # outputs may differ from float32
        assert [r["method"] for r in bf16] == ["nmt greedy, bfloat16", "nmt greedy, shortlist, bfloat16"]
        assert all(r["speedup_vs_float32"] > 0 and int(r["outputs_equal_to_float32"].split("/")[0]) > 0 for r in bf16)
        unscored = [r for r in rows if r["method"].endswith("without scores")]  # the same tokens, scores or not
        assert [r["method"] for r in unscored] == ["nmt greedy, without scores",
                                                   "nmt greedy, shortlist, without scores"]
        assert all(r["outputs_equal_to_with_scores"] == "100/100" and r["speedup_vs_with_scores"] > 0 for r in unscored)
        profiles = {r["method"]: r for r in profiled if r["group"] == "summary"}
        assert list(profiles) == ["nmt greedy, float32", "nmt greedy, shortlist, bfloat16"]
        for summary in profiles.values():  # the trace was read op by op; the attention's ops are named
            assert summary["sentences"] == 100 and summary["threads"] >= 1
            assert 0 < summary["matmul_share_of_thread_time"] < summary["op_share_of_thread_time"] <= 1.05
            assert 0 < summary["attention_other_ops_share_of_thread_time"] and summary["bound_if_matmuls_were_free"] > 1
        op_types = [r for r in profiled if r["group"] == "op_type"]
        assert any("MatMul" in r["name"] for r in op_types) and all(0 < r["share_of_op_time"] <= 1 for r in op_types)
        sized = [r for r in rows if r["method"].endswith("batch 16")]  # --batch-sizes 16, against the default
        assert [r["method"] for r in sized] == ["nmt greedy, batch 16"] and sized[0]["speedup_vs_default"] > 0
        assert sized[0]["default_batch_size"] != 16 and sized[0]["sentences_per_second"] > 0
        # other batches change float rounding, which may flip a near-tie (as for the exported graph below)
        assert int(sized[0]["outputs_equal_to_default"].split("/")[0]) > 50
        exported = [r for r in rows[2:] if r not in listed + tabled + transposed + gathered + bf16 + unscored + sized]
        if exported[0].get("skipped"):
            pytest.skip("tensorflow-text is not installed")
        assert len(exported) == 2 and all(r["sentences_per_second"] > 0 for r in exported)
        # In nmt translate's batches the exported graph computes exactly what nmt translate does; other
        # batches change float rounding, which may flip a near-tie.
        same_batches = [r for r in exported if "nmt translate's order" in r["method"]]
        assert len(same_batches) == 1 and all(r["outputs_equal_to_nmt_translate"] == "100/100" for r in same_batches)
        assert all(int(r["outputs_equal_to_nmt_translate"].split("/")[0]) >= 95 for r in exported)


def test_bench_loss_quick(capsys, tmp_path):
    """bench_loss.py times nmt's full-softmax loss against the forms it replaced: the same values."""
    rows = run_script("bench_loss.py", "--quick", "--label-smoothing", "0.1", capsys=capsys, tmp_path=tmp_path)
    assert [r["form"] for r in rows] == ["one-hot gradient (baseline)", "exp kept (sessions 16-44)",
                                         "nmt full_softmax_loss"]
    assert all(r["min_ms"] > 0 and r["speedup_vs_baseline_min"] > 0 for r in rows)
    assert rows[0]["speedup_vs_baseline_min"] == 1.0
    assert rows[0]["max_loss_difference"] == 0 and rows[0]["max_gradient_difference"] == 0
    assert all(r["max_loss_difference"] < 1e-4 and r["max_gradient_difference"] < 1e-3 for r in rows[1:])


def test_bench_optimizer_quick(bench_work, capsys, tmp_path):
    """bench_optimizer.py alternates Adam and lazy Adam over the same batches in one process, each also
    with repeated sampled candidates left unmerged (--unmerged), with the GRU loops' states as [U, B] and
    with the attention on TensorFlow's ops instead of the fused kernel."""
    rows = run_script("bench_optimizer.py", "--quick", "--unmerged", "--sampler-distortion", "0.5",
                      "--gru-layouts", "auto", "unit", "--attention-kernels", "fused", "tensorflow",
                      "--work", str(bench_work), capsys=capsys, tmp_path=tmp_path)
    names = [f"{optimizer}{merge}{layout}{kernel}" for optimizer in ("adam", "lazy_adam") for merge in ("", " unmerged")
             for layout in ("", " unit-major GRU loops") for kernel in ("", " tensorflow-op attention")]
    passes = [(r["optimizer"], r["pass"]) for r in rows if r["bench"] == "optimizer_pass"]
    assert passes == [(n, 0) for n in names] + [(n, 1) for n in names[::-1]]  # alternated
    summary = {r["optimizer"]: r for r in rows if r["bench"] == "optimizer_step"}
    assert set(summary) == set(names) and summary["adam"]["median_speedup_vs_adam"] == 1.0
    assert all(r["median_ms_per_step"] > 0 and len(r["pair_speedups"]) == 2 and r["sampler_distortion"] == 0.5
               for r in summary.values())


def test_bench_attention_quick(capsys, tmp_path):
    """bench_attention.py times the attention's scores with the fused kernel and with TensorFlow's ops, forward
    and backward, and reports how far apart their results are."""
    from nmt.model import fused

    if fused.kernel() is None:
        pytest.skip("no C++ compiler: no fused kernel to compare")
    rows = run_script("bench_attention.py", "--quick", capsys=capsys, tmp_path=tmp_path)
    assert [(r["target"], r["source"]) for r in rows] == [(1, 6), (5, 7)]
    assert all(r["fused_fwd_bwd_ms"] > 0 and r["tf_fwd_bwd_ms"] > 0 and r["max_relative_difference"] < 1e-4
               for r in rows)
    for extra, message in ((["--shapes", "20"], "--shapes takes TARGETxSOURCE, e.g. 20x20"),
                           (["--shapes", "20x0"], "--shapes, --rows, --units, --threads, --rounds and --calls must")):
        code, err = usage_error("bench_attention.py", *extra, capsys=capsys)
        assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)


def test_bench_sampler_quick(bench_work, capsys, tmp_path):
    """bench_sampler.py trains the same run once per distortion and seed and reports its validations, the
    medians over the seeds and what the sampler's draws hold (tests/test_model.py checks those
    expectations against real draws, for several distortions)."""
    from nmt.config import load_config
    from nmt.dataset import PreparedData
    from nmt.losses import UnigramSampler

    rows = run_script("bench_sampler.py", "--quick", "--distortions", "0.5", "--seeds", "5", "6",
                      "--work", str(bench_work), capsys=capsys, tmp_path=tmp_path)
    valid = [(r["distortion"], r["seed"], r["step"]) for r in rows if r["bench"] == "sampler_validation"]
    assert valid == [(0.5, 5, 30), (0.5, 6, 30)]
    summary = {r["distortion"]: r for r in rows if r["bench"] == "sampler"}
    assert set(summary) == {0.5}
    counts = PreparedData(bench_work / "prepared_v500_quick").unigram_counts
    for distortion, row in summary.items():
        runs = row["runs"]
        assert row["seeds"] == 2 and [r["seed"] for r in runs] == [5, 6]
        assert runs[0]["dev_loss"] != runs[1]["dev_loss"]  # the seed is applied
        assert row["dev_loss"] == pytest.approx(sum(r["dev_loss"] for r in runs) / 2, abs=0.001)  # median of 2
        for run in runs:
            assert 0 < run["dev_loss"] < 20 and run["best_dev_bleu"] >= run["dev_bleu"] >= 0
            saved = load_config(Path(run["run_dir"]) / "config.yaml").training
            assert (saved.sampler_distortion, saved.seed) == (distortion, run["seed"])
        sampler = UnigramSampler(counts, row["num_sampled"], distortion)
        assert row["expected_distinct_candidates"] == pytest.approx(sampler.expected_distinct(), abs=0.05)
        share = (counts[1:] * sampler.inclusion_probabilities()[1:]).sum() / counts[1:].sum()
        assert row["target_tokens_drawn"] == pytest.approx(share, abs=0.0005)


@pytest.mark.parametrize("extra,message", [
    (["--distortions", "0.5", "--set", "training.num_sampled=0"],
     "error: training.num_sampled is 0: the full softmax for a target vocabulary of 500, no candidates to draw"),
    (["--distortions", "1.5"], "training.sampler_distortion")])
def test_bench_sampler_rejects_a_run_it_cannot_compare(extra, message, bench_work):
    """A full-softmax run (no candidates) or a distortion out of range stops with one line before any run
    directory is written."""
    prepared_dir = runpy.run_path(str(ROOT / "scripts" / "benchdata.py"))["prepared_dir"]
    work = bench_work / "sampler_rejects"
    work.mkdir(exist_ok=True)
    if not (work / "prepared_v500_quick").exists():  # the bundled sample, prepared once for the module
        (work / "prepared_v500_quick").symlink_to(prepared_dir(bench_work, 500, quick=True))
    with pytest.raises(SystemExit) as stop:
        run_main("bench_sampler.py", "--quick", *extra, "--work", str(work))
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("error: ")
    assert message in stop.value.code and "\n" not in stop.value.code
    assert [p.name for p in work.iterdir()] == ["prepared_v500_quick"]  # no run directory


def test_bench_startup_quick(bench_work, capsys, tmp_path):
    """bench_startup.py times a fresh process' start-up, training and translating, per source tree."""
    rows = run_script("bench_startup.py", "--quick", "--repeats", "1", "--work", str(bench_work),
                      capsys=capsys, tmp_path=tmp_path)
    runs = {r["kind"]: r for r in rows if r["bench"] == "startup"}
    assert set(runs) == {"train", "translate"} and all(r["tree"] == str(ROOT) for r in runs.values())
    assert runs["train"]["build_seconds"] > 0 and runs["train"]["first_step_seconds"] > 0
    assert runs["translate"]["load_seconds"] > 0 and runs["translate"]["first_translation_seconds"] > 0
    medians = [r for r in rows if r["bench"] == "startup_median"]
    assert [r["kind"] for r in medians] == ["train", "translate"]
    assert all(r["build_seconds_vs_first_tree"] == 1.0 for r in medians if r["kind"] == "train")


def test_peers_report_leaves_decoding_only_rows_out_of_training(capsys, tmp_path):
    """bench_peers.py's shortlist row reuses nmt's training run: in its table and its plot it has
    decoding figures only; the plot's title names the CPU the run's first line recorded."""
    medians = [{"toolkit": "nmt", "median_of": 3, "train_tokens_per_second": 8000, "greedy_sentences_per_second": 440},
               {"toolkit": "nmt (shortlist decoding)", "median_of": 3, "train_tokens_per_second": 8000,
                "greedy_sentences_per_second": 595, "training_of": "nmt"},
               {"toolkit": "joeynmt", "median_of": 3, "train_tokens_per_second": 1000,
                "greedy_sentences_per_second": 135}]
    jsonl = tmp_path / "peers.jsonl"
    machine = {"machine": {"cpu": "AMD EPYC", "cores": 2, "date": "2026-11-23", "cpu_family_model": "25/17/1"}}
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in [machine, {"toolkit": "nmt", "repeat": 0}, *medians])
                     + "| table |\n")
    run_main("plot_peers.py", str(jsonl), "--out", str(tmp_path / "peers.png"))
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "2 CPU cores, AMD EPYC family 25 model 17, 2026-11-23 (median of 3)" in out["title"]
    assert out["bars"] == {"train_tokens_per_second": ["nmt", "joeynmt"],
                           "greedy_sentences_per_second": ["nmt", "nmt (shortlist decoding)", "joeynmt"]}
    assert (tmp_path / "peers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown_table = runpy.run_path(str(ROOT / "scripts" / "bench_peers.py"))["markdown_table"]
    table = {r["toolkit"]: {**r, "load_seconds": 1.0, "hyp_pieces": 30.0} for r in medians}
    lines = markdown_table(table).splitlines()
    assert lines[3] == "| nmt (shortlist decoding) | (as nmt) | 595 | 1.0 | 30.0 | - / 0.74x |"
    assert lines[4] == "| joeynmt | 1,000 | 135 | 1.0 | 30.0 | 8.00x / 3.26x |"


def test_peers_own_decoding_time_reads_nmt_translate_report_time(trained_run):
    """bench_peers.py reads the --report-time lines nmt translate prints, from a log that holds other runs too:
    the median of the last N reports for the test set less the median of the last N for one line."""
    own_decode_seconds = runpy.run_path(str(ROOT / "scripts" / "bench_peers.py"))["own_decode_seconds"]
    reports = {}
    for text in ("A man.\nTwo dogs run.\n", "A man.\n"):
        r = invoke("translate", "--model", str(trained_run), "--report-time", input=text)
        assert r.exit_code == 0, r.output
        reports[text.count("\n")] = r.stderr.strip()
    seconds = {n: float(re.search(r" in ([\d.]+) s:", line)[1]) for n, line in reports.items()}
    log = f"training output\n{reports[2]}\n{reports[1]}\nother output\n"
    assert own_decode_seconds(log, 2, 3) == pytest.approx(seconds[2] - seconds[1])
    assert own_decode_seconds(log, 5, 3) is None  # no report for that many lines
    synthetic = "".join(f"translated {n} (9 target pieces) in {sec} s: x\n" for n, sec in
                        [("2,000 lines", 99.0), ("1 line", 9.0), ("2,000 lines", 6.5), ("1 line", 1.5),
                         ("2,000 lines", 6.0), ("1 line", 2.0), ("2,000 lines", 7.0), ("1 line", 1.0)])
    assert own_decode_seconds(synthetic, 2000, 3) == 6.5 - 1.5  # the last 3 of each, medians


def test_bench_peers_combines_saved_runs(capsys, tmp_path):
    """--combine pools the repeats of runs saved in parts (a run cut short, the rest run later) and prints
    the medians over all of them, a decoding variant's over the repeats that ran it; a file from another
    machine, or one that cannot be read, stops it with a one-line error naming the file."""
    header = {"machine": {"cpu": "AMD EPYC", "cores": 2, "cpu_family_model": "25/1/1"}, "threads": 2,
              "vocab": 8000, "train_sentences": 28996, "decode_sentences": 2000}

    def repeat(toolkit, n, tps, seconds, shortlist=None):
        row = {"toolkit": toolkit, "repeat": n, "train_tokens_per_second": tps, "decode_seconds": seconds,
               "load_seconds": 9.0, "hyp_pieces": 29.0}
        if shortlist:
            row["variants"] = {"shortlist decoding": {"decode_seconds": shortlist, "hyp_pieces": 29.0}}
        return row

    first = [header, repeat("nmt", 0, 2600.0, 10.0), repeat("joeynmt", 0, 500.0, 40.0),  # --nmt-variants none
             {"toolkit": "nmt", "median_of": 1, "train_tokens_per_second": 2600}]
    rest = [header, repeat("nmt", 0, 3200.0, 8.0, 4.0), repeat("joeynmt", 0, 480.0, 38.0),
            repeat("nmt", 1, 2700.0, 12.0, 5.0), repeat("joeynmt", 1, 520.0, 39.0)]
    paths = [tmp_path / "r0.jsonl", tmp_path / "r12.jsonl"]
    for path, rows in zip(paths, (first, rest)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n| table |\n")
    run_main("bench_peers.py", "--combine", *map(str, paths))
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = {r["toolkit"]: r for r in lines if "toolkit" in r}
    assert rows["nmt"]["median_of"] == 3 and rows["nmt"]["train_tokens_per_second"] == 2700
    assert rows["nmt"]["greedy_sentences_per_second"] == 200  # 2,000 sentences / median 10 s
    shortlist = rows["nmt (shortlist decoding)"]  # decoded so in two of the three repeats
    assert shortlist["median_of"] == 2 and shortlist["greedy_sentences_per_second"] == 444  # 2,000 / 4.5 s
    assert rows["joeynmt"]["train_tokens_per_second"] == 500 and rows["joeynmt"]["greedy_sentences_per_second"] == 51
    assert "| joeynmt | 500 | 51 | 9.0 | 29.0 | 5.40x / 3.92x |" in out.splitlines()

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**header, "machine": {**header["machine"], "cpu_family_model": "26/2/0"}})
                     + "\n" + json.dumps(repeat("nmt", 0, 9000.0, 3.0)) + "\n")
    broken = tmp_path / "broken.jsonl"  # cut off mid-line while it was written
    broken.write_text(json.dumps(header) + "\n" + json.dumps(repeat("nmt", 0, 9000.0, 3.0))[:40] + "\n")
    unfinished = tmp_path / "unfinished.jsonl"  # stopped before its first repeat ended
    unfinished.write_text(json.dumps(header) + "\n")
    foreign = tmp_path / "limit.jsonl"  # another script's output
    foreign.write_text(json.dumps({"bench": "matmul", "gflops": 120.0}) + "\n")
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps(header) + "\n" + json.dumps({**repeat("nmt", 0, 9000.0, 3.0), "decode_seconds": None})
                       + "\n")
    for bad, message in ((other, f"{other}: machine cpu_family_model '26/2/0' differs from '25/1/1' in {paths[0]}"),
                         (tmp_path / "missing.jsonl", f"{tmp_path / 'missing.jsonl'}: cannot be read"),
                         (broken, f"{broken}, line 2: not JSON"),
                         (unfinished, f"{unfinished}: no per-repeat lines"),
                         (foreign, f"{foreign}: no machine line (not an output of bench_peers.py)"),
                         (partial, f"{partial}, line 2: nmt has no number for decode_seconds")):
        code, err = usage_error("bench_peers.py", "--combine", str(paths[0]), str(bad), capsys=capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith(f"bench_peers.py: error: {message}")


@pytest.mark.parametrize("option", ["--decode-repeats", "--repeats", "--steps"])
def test_bench_peers_rejects_zero_repeats(option, capsys, tmp_path):
    """A count of 0 stops at once with a one-line usage error (the medians of nothing would fail late)."""
    code, err = usage_error("bench_peers.py", option, "0", "--work", str(tmp_path / "peers"), capsys=capsys)
    assert code == 2
    assert err[-1].endswith(f"error: {option} must be at least 1") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "peers").exists()


@pytest.mark.parametrize("extra, message", [(["--dropout", "1.5"], "--dropout must be between 0 and 0.9"),
                                            (["--rounds", "0"], "--rounds and --steps must be at least 1"),
                                            (["--steps", "0"], "--rounds and --steps must be at least 1")])
def test_bench_limit_rejects_bad_options(extra, message, capsys, tmp_path):
    """--dropout outside model.dropout's range, or no rounds or steps, stops at once with a one-line usage
    error, nothing written."""
    code, err = usage_error("bench_limit.py", "--quick", *extra, "--work", str(tmp_path / "w"), capsys=capsys)
    assert code == 2 and err[-1].endswith(f"error: {message}")
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "w").exists()


@pytest.mark.parametrize("extra", [["--parts", "-1"], ["--parts", "1", "--repeats", "0"]])
def test_bench_train_rejects_bad_parts(extra, capsys, tmp_path):
    """A negative parts value or no repeats stops at once with a one-line usage error, no child started."""
    code, err = usage_error("bench_train.py", *extra, "--work", str(tmp_path / "work"), capsys=capsys)
    assert code == 2
    assert err[-1].endswith("error: --parts values must be at least 0 and --repeats at least 1")
    assert not (tmp_path / "work").exists()


COUNTS = "--steps and --passes must be at least 1, --num-sampled at least 0"


@pytest.mark.parametrize("script,extra,message", [
    ("bench_optimizer.py", ["--steps", "0"], COUNTS), ("bench_optimizer.py", ["--num-sampled", "-1"], COUNTS),
    ("bench_optimizer.py", ["--optimizers", "sgd"], "argument --optimizers: invalid choice: 'sgd'"),
    ("bench_optimizer.py", ["--unmerged", "--num-sampled", "0"], "--unmerged needs sampled softmax"),
    ("bench_optimizer.py", ["--sampler-distortion", "1.5"], "--sampler-distortion must be between 0 and 1"),
    ("bench_optimizer.py", ["--gru-layouts", "time"], "argument --gru-layouts: invalid choice: 'time'"),
    ("bench_optimizer.py", ["--attention-kernels", "xla"], "argument --attention-kernels: invalid choice: 'xla'"),
    ("bench_optimizer.py", ["--dropout", "1.5"], "--dropout must be between 0 and 0.9 (model.dropout)"),
    ("bench_train.py", ["--parts", "0", "--optimizers", "sgd"], "argument --optimizers: invalid choice: 'sgd'"),
    ("bench_train.py", ["--parts", "0", "--losses", "nce"], "argument --losses: invalid choice: 'nce'"),
    ("bench_peers.py", ["--toolkits", "nmt", "marian"], "argument --toolkits: invalid choice: 'marian'"),
    ("bench_peers.py", ["--nmt-variants", "beam"], "argument --nmt-variants: invalid choice: 'beam'"),
    ("bench_startup.py", ["--repeats", "0"], "--repeats must be at least 1"),
    ("bench_startup.py", ["--trees", "nowhere"], "holds no nmt/__init__.py"),
    ("bench_translate.py", ["--quick", "--profile", "-1"], "--profile must be 0 or more"),
    ("bench_translate.py", ["--quick", "--batch-sizes", "64", "0"], "--batch-sizes must be at least 1"),
    ("bench_translate.py", ["--quick", "--compact-fractions", "0.1", "0"],
     "--compact-fractions must be above 0 and at most 1"),
    ("bench_sampler.py", ["--quick", "--steps", "0"], "--steps and --validate-every must be at least 1"),
    ("bench_sampler.py", ["--quick", "--seeds", "-3"], "--distortions and --seeds must be 0 or more")])
def test_bench_scripts_reject_bad_optimizer_and_toolkit_arguments(script, extra, message, capsys, tmp_path):
    """A bad count, optimizer or toolkit name stops at once with a one-line usage error, nothing written."""
    code, err = usage_error(script, *extra, "--work", str(tmp_path / "work"), capsys=capsys)
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "work").exists()


def test_bench_scripts_name_missing_multi30k(monkeypatch, capsys, tmp_path):
    """Without Multi30k (a clone with no ../shared/data) a benchmark stops with one line naming the file
    and the variable to set, before it writes anything; bench_prepare names the corpus it skips."""
    monkeypatch.setenv("NMT_MULTI30K", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as stop:
        run_main("bench_optimizer.py", "--steps", "1", "--passes", "1", "--work", str(tmp_path / "work"))
    assert stop.value.code == (f"error: {tmp_path / 'nowhere' / 'train.en'}: Multi30k en-de not found; "
                               "set NMT_MULTI30K to the folder that holds train.en, train.de, val.* and test2016.*")
    assert not (tmp_path / "work").exists()
    corpora = runpy.run_path(str(ROOT / "scripts" / "bench_prepare.py"))["corpora"]
    assert "multi30k_en_de" not in corpora(quick=False)
    assert f"skipped: {tmp_path / 'nowhere'}: Multi30k not found (set NMT_MULTI30K)" in capsys.readouterr().err


def test_bench_quality_quick(bench_work, capsys, tmp_path):
    """nmt trains in a child process for 0.5 minutes from its launch and is killed, twice (--repeats 2);
    the last checkpoints before 0.25 and 0.5 minutes decode the sample's test split, which sacreBLEU
    scores (the peers' rows need their environments); the medians per time come last, and
    plot_quality.py draws the result."""
    work = bench_work / "quality"
    rows = run_script("bench_quality.py", "--quick", "--points", "2", "--repeats", "2", "--work", str(work),
                      capsys=capsys, tmp_path=tmp_path)
    setup, *rest = rows
    assert setup["bench"] == "quality_setup"
    points, medians = rest[:4], rest[4:]
    assert [(r["bench"], r["toolkit"], r["repeat"], r["minutes"]) for r in points] == [
        ("quality", "nmt", repeat, m) for repeat in (1, 2) for m in (0.25, 0.5)]
    assert all(30 <= r["seconds_run"] < 40 for r in points)  # killed at the deadline: no step limit of its own
    for early, last in (points[:2], points[2:]):
        assert 0 < early["checkpoint_seconds"] <= 15 < last["checkpoint_seconds"] <= 30  # the last before each
        assert 20 <= early["checkpoint_step"] < last["checkpoint_step"] and last["checkpoint_step"] % 20 == 0
    assert all(0 <= r["bleu"] <= 100 and r["chrf"] > 0 for r in points)
    for first, second in zip(points[:2], points[2:]):  # deterministic training: the same step, the same BLEU
        if first["checkpoint_step"] == second["checkpoint_step"]:
            assert first["bleu"] == second["bleu"]
    assert [(m["bench"], m["minutes"], m["bleus"]) for m in medians] == [
        ("quality_median", r["minutes"], [r["bleu"], points[k + 2]["bleu"]]) for k, r in enumerate(points[:2])]
    assert all(m["bleu_median"] == pytest.approx(sum(m["bleus"]) / 2, abs=0.006) for m in medians)
    hyp = work / f"nmt_ckpt-{points[-1]['checkpoint_step']}.hyp"
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == setup["decode_sentences"]
    jsonl = tmp_path / "quality.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_main("plot_quality.py", str(jsonl), "--out", str(tmp_path / "quality.png"))
    assert (tmp_path / "quality.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("option", ["--minutes", "--points", "--threads", "--repeats"])
def test_bench_quality_rejects_non_positive(option, capsys, tmp_path):
    code, err = usage_error("bench_quality.py", option, "0", "--work", str(tmp_path / "quality"), capsys=capsys)
    assert code == 2
    assert err[-1] == ("bench_quality.py: error: --minutes, --threads, --points and --repeats must be "
                       "positive, --checkpoint-steps at least 0")
    assert not (tmp_path / "quality").exists()  # stopped before anything was written
