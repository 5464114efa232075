"""``nmt export``: the SavedModel translates like ``nmt translate`` in a process without nmt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import invoke

pytest.importorskip("tensorflow_text")

INPUTS = [
    "I am hungry.",
    "",
    "Where is the station?",
    "   ",
    "He\u00a0runs\u200b fast\tevery   day.",      # no-break space, zero-width space, tab, runs of spaces
    "ｆｕｌｌ-width letters and caf\u0065\u0301",  # NFKC folds these
    "We " + "really " * 150 + "like it.",           # longer than decoding.max_source_pieces: truncated
]

LOADER = textwrap.dedent("""\
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
    lines = json.loads(sys.stdin.read())
    out = {}
    for path in sys.argv[1:]:
        model = tf.saved_model.load(path)
        result = model.signatures["serving_default"](text=tf.constant(lines, tf.string))
        empty = model.signatures["serving_default"](text=tf.constant([], tf.string))
        out[path] = {"translations": [t.decode("utf-8") for t in result["translations"].numpy()],
                     "scores": result["scores"].numpy().tolist(),
                     "empty_batch": int(empty["translations"].shape[0])}
    out["nmt_imported"] = "nmt" in sys.modules
    print(json.dumps(out))
""")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def test_exported_model_translates_like_nmt_translate(trained_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("".join(line + "\n" for line in INPUTS), encoding="utf-8")
    expected, exports = {}, []
    for beam in (1, 3):
        out = tmp_path / f"export_beam{beam}"
        result = invoke("export", "--model", str(trained_run), "--out", str(out), "--beam", str(beam))
        assert result.exit_code == 0, result.output
        assert {"saved_model.pb", "variables", "config.yaml", "README.txt"} <= {p.name for p in out.iterdir()}
        umask = os.umask(0)
        os.umask(umask)
        assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private mode of a temp directory
        assert f"beam_size: {beam}" in (out / "config.yaml").read_text(encoding="utf-8")
        assert "serving_default" in (out / "README.txt").read_text(encoding="utf-8")
        translated = invoke("translate", "--model", str(trained_run), "--beam", str(beam), "--json",
                            "--input", str(source))
        assert translated.exit_code == 0, translated.output
        assert "1 line(s) longer than" in translated.stderr  # the truncation rule is exercised
        expected[str(out)] = [json.loads(line) for line in translated.stdout.splitlines()]
        exports.append(str(out))

    # A fresh interpreter, started outside the repository, that never imports nmt.
    proc = subprocess.run([sys.executable, "-c", LOADER, *exports], input=json.dumps(INPUTS), capture_output=True,
                          text=True, cwd=tmp_path, env=_clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["nmt_imported"] is False
    for path in exports:
        want = expected[path]
        assert len(want) == len(INPUTS)
        assert got[path]["translations"] == [w["translation"] for w in want]
        assert got[path]["scores"] == pytest.approx([w["score"] for w in want], abs=1e-4)
        assert got[path]["translations"][1] == got[path]["translations"][3] == ""
        real = [got[path]["scores"][i] for i in (0, 2, 4, 5, 6)]  # the tiny model may say nothing: its scores
        assert all(score < 0 for score in real) and len({round(score, 4) for score in real}) > 1  # still differ
        assert got[path]["empty_batch"] == 0

    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    assert cli, "saved_model_cli (installed with tensorflow) not found"
    show = subprocess.run([cli, "show", "--dir", exports[0], "--tag_set", "serve", "--signature_def",
                           "serving_default"], capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "inputs['text']" in show.stdout and "outputs['translations']" in show.stdout
    assert show.stdout.count("DT_STRING") == 2 and "outputs['scores']" in show.stdout


def test_export_bad_inputs_write_nothing(trained_run, tmp_path):
    out = tmp_path / "export"
    result = invoke("export", "--model", str(trained_run), "--out", str(out), "--checkpoint", "ckpt-missing")
    assert result.exit_code == 2
    assert "ckpt-missing: no such checkpoint" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []

    no_spm = tmp_path / "run_without_spm"
    shutil.copytree(trained_run, no_spm)
    for model in no_spm.glob("*.model"):
        model.unlink()
    result = invoke("export", "--model", str(no_spm), "--out", str(out))
    assert result.exit_code == 2
    assert "SentencePiece model not found" in result.stderr and str(no_spm) in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()

    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    result = invoke("export", "--model", str(trained_run), "--out", str(out))
    assert result.exit_code == 2 and "already exists (use --overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = invoke("export", "--model", str(trained_run), "--out", str(out), "--overwrite", "--beam", "1")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "saved_model.pb").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_graph_normalisation_equals_python_normalisation_for_every_character():
    """Each code point Python knows, between two letters, normalises the same in the graph and in Python."""
    import unicodedata

    import tensorflow as tf

    from nmt.export import normalize_in_graph
    from nmt.normalize import normalize

    chars = [chr(c) for c in range(sys.maxunicode + 1)
             if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"]
    texts = [f"a{c}b" for c in chars] + ["  Two\u00a0\u00a0spaces\u200b and\ttabs \u2028 ", "\ufeffBOM", "ÉCOLE ﬁ ①"]
    for lowercase in (False, True):
        got = [g.decode("utf-8") for g in normalize_in_graph(tf.constant(texts), lowercase).numpy()]
        differ = [(t, g) for t, g in zip(texts, got) if g != normalize(t, lowercase)]
        if not lowercase:
            assert differ == []
        else:
            # TensorFlow's case tables predate Python 3.11's: 40 capitals added in Unicode 14 stay upper case.
            assert len(differ) <= 40
            assert all(g == t and unicodedata.category(t[1]) == "Lu" for t, g in differ)


def test_export_without_tensorflow_text_is_one_error(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # makes `import tensorflow_text` fail
    out = tmp_path / "export"
    result = invoke("export", "--model", str(trained_run), "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: nmt export needs the tensorflow-text package: pip install 'nmt[export]'"
    assert not out.exists()
