"""Faults: kills and signals during training, damaged or foreign files, a full disk, a closed pipe.

The long versions (many random kills, a million-line translation, a real full tmpfs for every
command) are in ``scripts/stress.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nmt.checkpoints import checkpoint_values
from nmt.config import config_from_dict
from nmt.training import train
from tests.conftest import DEFAULT_PARTS, invoke, tiny_config, write_config

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
NMT = [sys.executable, "-m", "nmt.cli"]


def logged_step(log: Path) -> int:
    """The last step a run's train.log reports (0 if none yet)."""
    if not log.is_file():
        return 0
    steps = [int(line.split()[1].split("/")[0]) for line in log.read_text().splitlines() if line.startswith("step ")]
    return steps[-1] if steps else 0


def start_and_stop(cmd: list[str], log: Path, after_step: int, sig: int, delay: float) -> tuple[int, str, int]:
    """Start ``cmd``, send ``sig`` once train.log passes ``after_step`` (+ ``delay`` s); return rc, stderr, step."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and logged_step(log) < after_step and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    step = logged_step(log)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, step


def interrupt_in_process(config: Path, log: Path, after_step: int) -> tuple[int, str]:
    """``nmt train --config config --resume`` in this process, sent SIGINT (as Ctrl-C) from a thread once
    train.log passes ``after_step``: ``(exit code, stderr)``. A SIGINT that arrives when training's own
    handler is not installed fails the test instead of interrupting pytest."""
    import threading

    late: list[int] = []
    stop_polling = threading.Event()

    def send() -> None:
        while not stop_polling.is_set():
            if logged_step(log) >= after_step:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    guard = signal.signal(signal.SIGINT, lambda signum, frame: late.append(signum))
    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        result = invoke("train", "--config", str(config), "--resume")
    finally:
        stop_polling.set()
        sender.join()
        signal.signal(signal.SIGINT, guard)
    assert not late, "SIGINT arrived outside training"
    return result.exit_code, result.stderr


def test_killed_and_signalled_runs_resume_to_the_same_weights(corpus_dir, prepared, tmp_path):
    """SIGKILL at a random step, then SIGTERM, then SIGINT, then resume: same losses and weights as no fault."""
    every = 5
    opts = {"max_steps": 40, "checkpoint_every": every, "validate_every": 20, "log_every": 1, **DEFAULT_PARTS}
    model = {"dropout": 0.2}
    reference = train(config_from_dict(tiny_config(corpus_dir, model=model,
                                                   training={"run_dir": str(tmp_path / "ref"), **opts})),
                      log=lambda s: None)
    cfg = tiny_config(corpus_dir, model=model, training={"run_dir": str(tmp_path / "run"), **opts})
    path = write_config(tmp_path / "run.yaml", cfg)
    log = tmp_path / "run" / "train.log"
    rng = random.Random(3)

    rc, err, killed_at = start_and_stop([*NMT, "train", "--config", str(path)], log, rng.randint(6, 12),
                                        signal.SIGKILL, rng.uniform(0, 0.1))
    assert rc == -signal.SIGKILL, err
    # SIGTERM to a process of its own; SIGINT (the same handler) to this process, saving one start-up
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = logged_step(log)
        if sig == signal.SIGTERM:
            rc, err, _ = start_and_stop([*NMT, "train", "--config", str(path), "--resume"], log,
                                        before + rng.randint(3, 6), sig, rng.uniform(0, 0.1))
        else:
            rc, err = interrupt_in_process(path, log, before + rng.randint(3, 6))
        lines = err.strip().splitlines()
        resumed = next(line for line in lines if line.startswith("resumed from") or "no checkpoint yet" in line)
        if sig == signal.SIGTERM:
            # nothing is lost beyond one checkpoint interval
            restored = int(resumed.split(" at step ")[1].split()[0]) if "at step" in resumed else 0
            assert 0 <= killed_at - restored <= every, (killed_at, resumed)
        assert rc == 128 + sig, err
        assert lines[-1].startswith(f"error: {signal.Signals(sig).name} received: saved ") and "--resume" in lines[-1]
        assert "Traceback" not in err
    logs: list[str] = []
    final = train(config_from_dict(cfg), resume=True, log=logs.append)
    restored = int(next(line for line in logs if line.startswith("resumed from")).split(" at step ")[1].split()[0])
    assert final.step == 40 and final.losses == reference.losses[restored:40]
    ours = checkpoint_values(str(tmp_path / "run" / "checkpoints" / "ckpt-40"))
    theirs = checkpoint_values(str(tmp_path / "ref" / "checkpoints" / "ckpt-40"))
    assert ours.keys() == theirs.keys() and len(ours) > 20
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def one_line_error(result, code: int, *fragments: str) -> str:
    err = result.stderr.strip()
    assert result.exit_code == code, result.output
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in result.output, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_damaged_foreign_and_missing_files(trained_run, corpus_dir, prepared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints" / "ckpt-60"
    data = next(run.glob("checkpoints/ckpt-60.data-*"))

    # a truncated checkpoint: translate refuses it; resume skips it for the one before
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    one_line_error(invoke("translate", "--model", str(run), "--checkpoint", "last", input="hi\n"),
                   2, f"{last}: is damaged or incomplete")
    (run / "checkpoints" / "ckpt-70_temp").mkdir()          # what a save cut short leaves
    cfg = tiny_config(corpus_dir, training={"run_dir": str(run), "max_steps": 62, "validate_every": 30})
    logs: list[str] = []
    result = train(config_from_dict(cfg), resume=True, log=logs.append)
    assert any(line.startswith(f"warning: skipping {last}: is damaged") for line in logs), logs
    assert any(line.startswith("resumed from") and "ckpt-50 at step 50" in line for line in logs), logs
    assert any("ckpt-70_temp, left by an interrupted save" in line for line in logs)
    assert result.step == 62 and not (run / "checkpoints" / "ckpt-70_temp").exists()

    # every checkpoint damaged: resume has nothing to fall back to
    for f in run.glob("checkpoints/ckpt-*.data-*"):
        f.write_bytes(b"")
    r = invoke("train", "--config", str(write_config(tmp_path / "resume.yaml", cfg)), "--resume")
    last_line = r.stderr.strip().splitlines()[-1]  # train logs its progress on stderr before it
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert last_line.startswith("error: cannot resume: no readable checkpoint in") and "is damaged" in last_line

    # a state file naming a checkpoint whose files are gone
    for f in run.glob("checkpoints/ckpt-62.*"):
        f.unlink()
    one_line_error(invoke("translate", "--model", str(run), "--checkpoint", "last", input="hi\n"),
                   2, "checkpoints/checkpoint: names ckpt-62, whose files are missing")

    # a checkpoint state file that is not one
    (run / "checkpoints" / "checkpoint").write_text("garbage\n")
    one_line_error(invoke("translate", "--model", str(run), "--checkpoint", "last", input="hi\n"),
                   2, "checkpoints/checkpoint: not a checkpoint state file")

    # a checkpoint from a model with another vocabulary size
    other_prep = tmp_path / "prep200"
    other = tiny_config(corpus_dir, data={"prepared_dir": str(other_prep), "sentencepiece": {"vocab_size": 200}},
                        training={"run_dir": str(tmp_path / "other"), "max_steps": 2, "validate_every": 2})
    r = invoke("prepare", "--config", str(write_config(tmp_path / "other.yaml", other)))
    assert r.exit_code == 0, r.output
    train(config_from_dict(other), log=lambda s: None)
    for f in (run / "best").iterdir():
        f.unlink()
    for f in (tmp_path / "other" / "best").iterdir():
        shutil.copy(f, run / "best" / f.name)
    one_line_error(invoke("translate", "--model", str(run), input="hi\n"),
                   2, "ckpt-2: does not fit this run's model and vocabulary")

    # a run directory without its SentencePiece model
    (run / "spm.model").unlink()
    one_line_error(invoke("translate", "--model", str(run), input="hi\n"),
                   2, "spm.model: SentencePiece model not found")


def small_disk(directory: Path, size_kib: int) -> list[str]:
    """A command prefix that runs with ``directory`` on a tmpfs of ``size_kib`` (needs user namespaces)."""
    directory.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            f'mount -t tmpfs -o size={size_kib}k tmpfs "{directory}" && exec "$@"', "sh"]


def _can_mount_tmpfs(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*small_disk(tmp / "probe", 64), "true"], capture_output=True)
    return probe.returncode == 0


def test_a_full_disk_stops_with_the_last_good_checkpoint(corpus_dir, prepared, tmp_path):
    """Training and prepare on a 1.5 MiB tmpfs; a file-size limit stands in where tmpfs cannot be mounted."""
    disk = tmp_path / "disk"
    run = disk / "run"
    cfg = tiny_config(corpus_dir, training={"run_dir": str(run), "max_steps": 200, "checkpoint_every": 5,
                                            "validate_every": 1000, "keep_checkpoints": 10})
    path = write_config(tmp_path / "full.yaml", cfg)
    if _can_mount_tmpfs(tmp_path):
        # the tiny model's checkpoints are ~0.4 MB each: the disk fills after a few
        cmd, preexec, kind = [*small_disk(disk, 1536), *NMT], None, "tmpfs"
    else:
        import resource

        def preexec():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            # above the SentencePiece model's size, below a checkpoint's
            resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

        cmd, kind = NMT, "rlimit"
    proc = subprocess.run([*cmd, "train", "--config", str(path)], env=ENV, capture_output=True, text=True,
                          preexec_fn=preexec, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[-1].startswith("error: ") and "cannot write" in err[-1], err[-1]
    assert "the last good checkpoint is " in err[-1]
    if kind == "tmpfs":
        assert "No space left on device" in err[-1]
        # (the tmpfs is gone with its namespace; its contents cannot be inspected from here)
    # prepare onto a full disk: one error, nothing half-written
    out = disk / "prepared"
    if kind == "tmpfs":
        script = (f'{" ".join(NMT)} prepare --tsv "{corpus_dir / "tiny.tsv"}" --out "{out}" --vocab-size 300 '
                  f'--set data.dev_size=40 --set data.test_size=40; rc=$?; ls -A "{disk}"; exit $rc')
        p = subprocess.run([*small_disk(disk, 16), "sh", "-c", script], env=ENV, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 1, p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith(f"error: {out}: cannot write (No space left on device)")
        assert p.stdout.strip() == "", f"left on the disk: {p.stdout}"


def test_translate_stops_quietly_when_the_reader_goes_away(trained_run):
    lines = "".join(f"this is line {i}\n" for i in range(3000))
    proc = subprocess.run(f'{" ".join(NMT)} translate --model "{trained_run}" | head -n 2', shell=True, env=ENV,
                          input=lines, capture_output=True, text=True, timeout=300, executable="/bin/bash")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2
    assert proc.stderr == "", proc.stderr
    # standard output on a full device: one error line naming it
    proc = subprocess.run(f'{" ".join(NMT)} translate --model "{trained_run}" > /dev/full', shell=True, env=ENV,
                          input=lines, capture_output=True, text=True, timeout=300, executable="/bin/bash")
    assert proc.returncode == 1 and proc.stderr.strip() == \
        "error: standard output: cannot write (No space left on device)", proc.stderr


def test_translate_to_a_full_device_is_one_error(trained_run):
    target = "/dev/full"
    if not Path(target).is_char_device():
        pytest.skip(f"{target} missing")
    r = invoke("translate", "--model", str(trained_run), "--output", target, input="hello\n" * 3000)
    one_line_error(r, 1, f"{target}: cannot write (No space left on device)")
    assert Path(target).is_char_device()
