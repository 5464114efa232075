"""Multi-worker training on localhost: two processes, MultiWorkerMirroredStrategy, TF_CONFIG."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from nmt.config import config_from_dict
from nmt.distribute import localhost_tf_configs
from nmt.training import read_metrics, train
from tests.conftest import invoke, tiny_config, write_config


def test_two_workers_match_one_process_with_the_same_global_batch(corpus_dir, prepared, tmp_path):
    opts = {"max_steps": 8, "batch_size": 32, "log_every": 2, "checkpoint_every": 4, "validate_every": 8,
            "threads": 1}
    model = {"dropout": 0.0}  # dropout masks depend on the batch's shape, which sharding changes
    cfg = tiny_config(corpus_dir, model=model, training={"run_dir": str(tmp_path / "multi"), **opts,
                                                         "distribution": "multi_worker"})
    path = write_config(tmp_path / "multi.yaml", cfg)
    tf_configs = localhost_tf_configs(2)
    private = tmp_path / "tmp"  # where the non-chief worker keeps its own checkpoints
    private.mkdir()
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_configs[index], "TMPDIR": str(private)}
        procs.append(subprocess.Popen([sys.executable, "-m", "nmt.cli", "train", "--config", str(path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 180
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-worker training did not end on its own within 3 minutes")
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    assert "worker 0 of 2" in outputs[0][1] and "MultiWorkerMirroredStrategy with 2 replicas" in outputs[0][1]

    single = tiny_config(corpus_dir, model=model, training={"run_dir": str(tmp_path / "single"), **opts,
                                                            "distribution": "none"})
    train(config_from_dict(single), log=lambda s: None)
    multi_rows, single_rows = read_metrics(tmp_path / "multi", "train"), read_metrics(tmp_path / "single", "train")
    assert [r["step"] for r in multi_rows] == [r["step"] for r in single_rows] == [1, 2, 4, 6, 8]
    for m, s in zip(multi_rows, single_rows):
        # summation order differs (two shards, then an all-reduce), and Adam's normalised early
        # steps amplify rounding in near-zero gradients: equal to about 1e-4 after 8 steps
        assert m["loss"] == pytest.approx(s["loss"], rel=1e-3), (m, s)

    # the chief's checkpoint is a plain one: a single-process translate loads it
    r = invoke("translate", "--model", str(tmp_path / "multi"), "--checkpoint", "last", input="hello\nhow are you?\n")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 2
    assert not list(private.glob("nmt-worker*")), "the non-chief worker left its directory behind"


def test_multi_worker_without_a_usable_tf_config_is_one_error(corpus_dir, prepared, tmp_path, monkeypatch):
    cfg = tiny_config(corpus_dir, training={"run_dir": str(tmp_path / "r"), "distribution": "multi_worker"})
    path = str(write_config(tmp_path / "mw.yaml", cfg))
    cases = [(None, "TF_CONFIG is not set"), ("{not json", "TF_CONFIG: expected"),
             ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
              "TF_CONFIG: task worker 3 is not in the cluster"),
             ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
              "TF_CONFIG: task type 'ps' is not chief or worker")]
    for value, fragment in cases:
        if value is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", value)
        r = invoke("train", "--config", path)
        err = r.stderr.strip()
        assert r.exit_code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "r").exists()
