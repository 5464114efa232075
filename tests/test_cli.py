"""The command line: help with examples, version, one-line errors."""

from __future__ import annotations

import pytest

from nmt import __version__
from tests.conftest import invoke


@pytest.mark.parametrize("command", ["prepare", "train", "translate", "eval"])
def test_every_command_has_help_with_an_example(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and "Example" in r.stdout and "nmt " + command in r.stdout


def test_version_and_group_help():
    assert invoke("--version").stdout.strip() == f"nmt, version {__version__}"
    assert "nmt prepare --config" in invoke("--help").stdout


def test_usage_errors_exit_2():
    r = invoke("train")
    assert r.exit_code == 2 and "Missing option '--config'" in r.output
    r = invoke("prepare", "--src", "a.txt")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
    r = invoke("eval", "--hyp", "a.txt", "--ref", "b.txt", "--length-penalty", "-1")
    assert r.exit_code == 2 and "Invalid value for '--length-penalty': -1.0 is not in the range x>=0.0" in r.stderr
    assert "Traceback" not in r.output


def test_tensorflow_settings_fill_only_what_the_user_left_unset(monkeypatch):
    """The CLI, ``Translator`` and training call ``tensorflow_environment`` before TensorFlow starts
    (conftest does too): here TensorFlow's CPU pool takes even a small tensor, which oneDNN's default
    allocator would leave to malloc (untracked), and a value the user set is kept."""
    import os

    import tensorflow as tf

    from nmt.sysinfo import tensorflow_environment

    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    small = tf.ones([100]) * 2.0  # 400 bytes
    assert tf.config.experimental.get_memory_info("CPU:0")["current"] >= before + small.numpy().nbytes
    for name in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "0")
    tensorflow_environment()
    assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "0" and os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert int(os.environ["TF_CPU_BFC_MEM_LIMIT_IN_MB"]) >= 1024  # the machine's memory


def one_line_error(r, code: int, fragment: str) -> None:
    assert r.exit_code == code, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in r.output


def test_remaining_bad_inputs(trained_run, corpus_dir, prepared, tmp_path):
    import json
    import shutil

    from tests.conftest import tiny_config, write_config

    one_line_error(invoke("translate", "--model", str(trained_run), "--beam", "2", "--n-best", "3", input="hi\n"),
                   2, "--n-best 3 needs --beam of at least 3")
    one_line_error(invoke("translate", "--model", str(trained_run), "--input", str(tmp_path / "none.txt")),
                   2, "none.txt: file not found")
    one_line_error(invoke("prepare", "--tsv", "x.tsv", "--tsv-columns", "a,b", "--out", str(tmp_path / "o")),
                   2, "--tsv-columns 'a,b': expected two integers")
    # a prepared directory whose data no longer matches its manifest is refused by train
    broken = tmp_path / "broken"
    shutil.copytree(prepared, broken)
    ids = broken / "train" / "tgt.ids"
    ids.write_bytes(ids.read_bytes()[:-2] + b"\x07\x00")
    cfg = tiny_config(corpus_dir, data={"prepared_dir": str(broken)}, training={"run_dir": str(tmp_path / "r")})
    one_line_error(invoke("train", "--config", str(write_config(tmp_path / "b.yaml", cfg))),
                   2, "tgt.ids: does not match its sha256 in the manifest")
    # a manifest whose piece counts do not fit the target vocabulary (they set the sampler and the output bias)
    ids.write_bytes((prepared / "train" / "tgt.ids").read_bytes())
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["tgt_unigram_counts"] = manifest["tgt_unigram_counts"][:-1]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(invoke("train", "--config", str(tmp_path / "b.yaml")), 2,
                   "tgt_unigram_counts has 299 entries for a target vocabulary of 300")
    assert not (tmp_path / "r").exists()
    (broken / "manifest.json").unlink()
    one_line_error(invoke("train", "--config", str(tmp_path / "b.yaml")), 2, "not a prepared directory")


def test_bfloat16_training_on_a_gpu_is_refused_before_the_run_directory_is_touched(corpus_dir, prepared, tmp_path,
                                                                                    monkeypatch):
    """training.precision bfloat16 is for CPUs: where TensorFlow sees a GPU, train stops in one line, and
    neither a new run directory nor an existing one given --overwrite is written."""
    import tensorflow as tf

    from tests.conftest import tiny_config, write_config

    real = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if kind == "GPU"
                        else real(kind))
    run = tmp_path / "run"
    cfg = tiny_config(corpus_dir, data={"prepared_dir": str(prepared)},
                      training={"run_dir": str(run), "precision": "bfloat16"})
    path = str(write_config(tmp_path / "bf16.yaml", cfg))
    one_line_error(invoke("train", "--config", path), 1, "training.precision bfloat16 is for CPUs")
    assert not run.exists()
    run.mkdir()
    (run / "config.yaml").write_text("kept\n")
    one_line_error(invoke("train", "--config", path, "--overwrite"), 1, "training.precision bfloat16 is for CPUs")
    assert (run / "config.yaml").read_text() == "kept\n"
