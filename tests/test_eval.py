"""``nmt eval`` gives exactly what the sacrebleu command-line tool gives, and rejects bad input clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from nmt.training import read_metrics
from tests.conftest import invoke

HYP = ["The cat sat on the mat.", "A dog runs in the park", "Hello world !", "It is raining today."]
REF1 = ["The cat sat on a mat.", "A dog is running in the park.", "Hello, world!", "It rains today."]
REF2 = ["A cat was sitting on the mat.", "The dog runs in the park.", "Hello world!", "Today it is raining."]


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, lines in (("hyp", HYP), ("ref1", REF1), ("ref2", REF2)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def sacrebleu_cli(*args: str) -> list[float]:
    exe = shutil.which("sacrebleu")
    cmd = [exe] if exe else [sys.executable, "-m", "sacrebleu"]
    out = subprocess.run([*cmd, *args, "-b", "-w", "4"], capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.replace("[", " ").replace("]", " ").replace(",", " ").split()]


@pytest.mark.parametrize("refs", [("ref1",), ("ref1", "ref2")])
def test_scores_equal_the_sacrebleu_tool(files, refs):
    ref_args = [a for r in refs for a in ("--ref", str(files[r]))]
    r = invoke("eval", "--hyp", str(files["hyp"]), *ref_args, "--metrics", "bleu,chrf,ter", "--json")
    assert r.exit_code == 0, r.output
    ours = {x["name"]: x["score"] for x in json.loads(r.stdout)["results"]}
    theirs = sacrebleu_cli(*[str(files[x]) for x in refs], "-i", str(files["hyp"]), "-m", "bleu", "chrf", "ter")
    assert [round(ours[m], 4) for m in ("bleu", "chrf", "ter")] == theirs
    text = invoke("eval", "--hyp", str(files["hyp"]), *ref_args, "--metrics", "bleu,chrf,ter").stdout.splitlines()
    assert text[0].startswith("BLEU = ") and f"nrefs:{len(refs)}|case:mixed|eff:no|tok:13a" in text[0]
    assert text[1].startswith("chrF2 = ") and text[2].startswith("TER = ")


def test_lowercase_and_tokenize_pass_through(files):
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(files["ref1"]), "--lowercase", "--tokenize", "intl",
               "--json")
    result = json.loads(r.stdout)["results"][0]
    assert "case:lc" in result["signature"] and "tok:intl" in result["signature"]
    theirs = sacrebleu_cli(str(files["ref1"]), "-i", str(files["hyp"]), "-lc", "-tok", "intl")
    assert round(result["score"], 4) == theirs[0]


def test_bad_inputs(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(short))
    assert r.exit_code == 2
    assert f"line counts differ: {files['hyp']} has 4 lines, {short} has 1" in r.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty.txt: empty file" in invoke("eval", "--hyp", str(empty), "--ref", str(files["ref1"])).stderr
    r = invoke("eval", "--hyp", str(tmp_path / "missing.txt"), "--ref", str(files["ref1"]))
    assert r.exit_code == 2 and "missing.txt: file not found" in r.stderr
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(files["ref1"]), "--metrics", "bleu,meteor")
    assert r.exit_code == 2 and "unknown metric 'meteor'" in r.stderr
    for result in (r,):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_eval_with_model_translates_then_scores(trained_run, prepared, tmp_path):
    src, ref = prepared / "test" / "src.txt", prepared / "test" / "tgt.txt"
    hyp = tmp_path / "hyp.txt"
    r = invoke("eval", "--model", str(trained_run), "--src", str(src), "--ref", str(ref), "--save-hyp", str(hyp),
               "--json")
    assert r.exit_code == 0, r.output
    saved = hyp.read_text().splitlines()
    assert len(saved) == len(ref.read_text().splitlines())
    again = invoke("eval", "--hyp", str(hyp), "--ref", str(ref), "--json")
    assert json.loads(again.stdout)["results"] == json.loads(r.stdout)["results"]
    # beam options reach the decoder as in nmt translate
    beam_args = ["--beam", "3", "--length-penalty", "0"]
    r = invoke("eval", "--model", str(trained_run), "--src", str(src), "--ref", str(ref), "--save-hyp", str(hyp),
               *beam_args)
    assert r.exit_code == 0, r.output
    translated = invoke("translate", "--model", str(trained_run), "--input", str(src), *beam_args)
    assert hyp.read_text() == translated.stdout


def test_confidence_and_paired_baseline(files, tmp_path):
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(files["ref1"]), "--confidence", "--json")
    res = json.loads(r.stdout)["results"][0]
    assert res["ci"] > 0 and "bs:1000" in res["signature"] and "μ =" in res["text"]
    weak = tmp_path / "weak.txt"
    weak.write_text("cat\ndog\nhello\nrain\n")
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(files["ref1"]), "--baseline", str(weak),
               "--metrics", "bleu,chrf", "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)["results"]
    assert [x["name"] for x in results] == ["bleu", "chrf"]
    assert all(0 <= x["p_value"] <= 1 and x["score"] > x["baseline"] for x in results)
    r = invoke("eval", "--hyp", str(files["hyp"]), "--ref", str(files["ref1"]), "--baseline", str(files["hyp"]) + "x")
    assert r.exit_code == 2 and "file not found" in r.stderr


def test_validation_bleu_equals_nmt_eval_on_the_best_checkpoint(trained_run, prepared, tmp_path):
    valid = read_metrics(trained_run, "valid")
    n = valid[0]["dev_sentences"]
    for side in ("src", "tgt"):
        lines = (prepared / "dev" / f"{side}.txt").read_text().splitlines()[:n]
        (tmp_path / f"dev.{side}").write_text("\n".join(lines) + "\n")
    r = invoke("eval", "--model", str(trained_run), "--checkpoint", "best", "--src", str(tmp_path / "dev.src"),
               "--ref", str(tmp_path / "dev.tgt"), "--beam", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["score"] == pytest.approx(max(v["dev_bleu"] for v in valid), abs=1e-9)
