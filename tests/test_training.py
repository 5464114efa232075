"""Training: both losses and placements learn, runs write their files, resume is exact, seeds reproduce."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import nmt.losses
from nmt.config import config_from_dict
from nmt.dataset import PreparedData
from nmt.errors import NmtError
from nmt.losses import UnigramSampler
from nmt.sysinfo import available_cores
from nmt.training import read_metrics, train
from tests.conftest import DEFAULT_PARTS, invoke, tiny_config, write_config


def run(corpus_dir, tmp_path, name, **training):
    cfg = tiny_config(corpus_dir, training={"run_dir": str(tmp_path / name), **training})
    return config_from_dict(cfg, name)


@pytest.mark.parametrize("placement,num_sampled,precision", [
    ("post", 64, "float32"), ("post", 0, "float32"), ("feed", 64, "float32"), ("feed", 0, "float32"),
    ("post", 64, "float16"), ("feed", 0, "float16"), ("post", 64, "bfloat16"), ("post", 0, "bfloat16")])
def test_loss_falls_and_run_directory_is_complete(corpus_dir, prepared, tmp_path, placement, num_sampled, precision):
    """Both placements and losses learn; mixed precision (float16 compute, GPUs' default) and bfloat16
    matmuls (training.precision, for CPUs) train and validate too."""
    cfg = tiny_config(corpus_dir, model={"attention_placement": placement},
                      training={**DEFAULT_PARTS, "run_dir": str(tmp_path / "run"), "num_sampled": num_sampled,
                                "max_steps": 40,
                                "validate_every": 20, "mixed_precision": "on" if precision == "float16" else "off",
                                "precision": "bfloat16" if precision == "bfloat16" else "float32"})
    logs: list[str] = []
    try:
        result = train(config_from_dict(cfg), log=logs.append)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the policy is global: leave it as other tests expect
    device = [line for line in logs if line.startswith("device:")]
    assert len(device) == 1
    assert ("mixed float16" in device[0]) == (precision == "float16")
    assert ("bfloat16 matmuls" in device[0]) == (precision == "bfloat16")
    # nmt's default on a CPU of two or more cores: two parts of each batch side by side
    on_cpu = not tf.config.list_physical_devices("GPU")
    assert ("2 parts of each batch side by side" in device[0]) == (on_cpu and available_cores() >= 2), device[0]
    assert result.step == 40 and len(result.losses) == 40
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 0.5, (first, last)
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "spm.model", "train.log", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "checkpoint").is_file() and (run_dir / "best" / "checkpoint").is_file()
    valid = read_metrics(run_dir, "valid")
    assert [r["step"] for r in valid] == [20, 40]
    assert all(r["dev_ppl"] > 1 and 0 <= r["dev_bleu"] <= 100 for r in valid)
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())


def test_output_bias_starts_at_the_targets_unigram_frequencies(corpus_dir, prepared, tmp_path):
    """model.output_bias_init unigram (the default): a new run's first loss (full softmax) is the cross-entropy
    of the training targets under their own add-one smoothed piece frequencies, where a zero bias starts
    near log V; zeros keeps Keras' zero bias."""
    counts = PreparedData(prepared).unigram_counts.astype(np.float64)
    q = (counts + 1) / (counts + 1).sum()
    unigram_entropy = float(-(counts / counts.sum() * np.log(q)).sum())
    first = {}
    for init in ("unigram", "zeros"):
        cfg = tiny_config(corpus_dir, model={"output_bias_init": init},
                          training={"run_dir": str(tmp_path / init), "num_sampled": 0, "max_steps": 1,
                                    "validate_every": 100})
        first[init] = train(config_from_dict(cfg), log=lambda s: None).losses[0]
    assert abs(first["unigram"] - unigram_entropy) < 0.4, (first, unigram_entropy)
    assert first["zeros"] > unigram_entropy + 0.8 and abs(first["zeros"] - np.log(len(counts))) < 0.4, \
        (first, unigram_entropy)


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
def test_seeded_runs_repeat_and_resume_continues_exactly(corpus_dir, prepared, tmp_path, optimizer):
    """Two runs of one seed give the same losses, and a run stopped at step 20 and resumed continues exactly.
    Also with training.optimizer lazy_adam: its sparse updates are deterministic and its moments resume."""
    opts = dict(max_steps=30, checkpoint_every=10, validate_every=100, optimizer=optimizer, **DEFAULT_PARTS)
    model = {"dropout": 0.2}
    mk = lambda name, **t: config_from_dict(tiny_config(  # noqa: E731
        corpus_dir, model=model, training={"run_dir": str(tmp_path / name), **opts, **t}))
    a = train(mk("a"), log=lambda s: None)
    first = train(mk("c", max_steps=20), log=lambda s: None)
    assert first.losses == a.losses[:20], "two runs with the same seed must give identical losses"
    logs: list[str] = []
    c = train(mk("c"), resume=True, log=logs.append)
    assert any("resumed from" in line and "at step 20" in line for line in logs), logs
    assert any("training.max_steps changed from 20 to 30" in line for line in logs)
    assert c.step == 30 and c.losses == a.losses[20:30]


def test_resume_and_overwrite_rules_via_cli(corpus_dir, trained_run, tmp_path):
    cfg = tiny_config(corpus_dir, training={"run_dir": str(trained_run)})
    r = invoke("train", "--config", str(write_config(tmp_path / "same.yaml", cfg)))
    assert r.exit_code == 2 and "run directory exists; use --resume" in r.stderr
    changed = tiny_config(corpus_dir, model={"decoder_units": 48}, training={"run_dir": str(trained_run)})
    r = invoke("train", "--config", str(write_config(tmp_path / "changed.yaml", changed)), "--resume")
    assert r.exit_code == 2, r.output
    assert "cannot resume" in r.stderr and "model.decoder_units (32 -> 48)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = invoke("train", "--config", str(tmp_path / "same.yaml"), "--resume", "--overwrite")
    assert r.exit_code == 2 and "exclusive" in r.stderr


def test_run_dir_that_is_not_a_run_is_never_deleted(corpus_dir, prepared, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    cfg = tiny_config(corpus_dir, training={"run_dir": str(precious)})
    r = invoke("train", "--config", str(write_config(tmp_path / "c.yaml", cfg)), "--overwrite")
    assert r.exit_code == 2 and "not a run directory" in r.stderr
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(corpus_dir, prepared, tmp_path, monkeypatch):
    from nmt.training import Trainer

    cfg = config_from_dict(tiny_config(corpus_dir, training={"run_dir": str(tmp_path / "nan"), "max_steps": 30}))
    trainer = Trainer(cfg, log=lambda s: None)
    real_step, calls = trainer._train_step, []

    def poisoned(*batch):
        calls.append(1)
        loss, tokens = real_step(*batch)
        return (loss * float("nan"), tokens) if len(calls) == 13 else (loss, tokens)

    trainer._train_step = poisoned
    with pytest.raises(NmtError, match=r"training loss is nan at step 13; stopped without saving "
                                       r"\(last good checkpoint: .*ckpt-10\)"):
        trainer.train()
    assert trainer.manager.latest_checkpoint.endswith("ckpt-10")


def test_logged_tokens_per_second_leave_validation_time_out(corpus_dir, prepared, tmp_path, monkeypatch):
    """On a clock where a step takes 1 s and a validation 100 s, each logged rate is the window's tokens
    over its steps' seconds, also when a validation falls inside the window (here at step 2 of (1, 4])."""
    import nmt.training
    from nmt.training import Trainer

    cfg = config_from_dict(tiny_config(corpus_dir, training={
        "run_dir": str(tmp_path / "rate"), "max_steps": 8, "log_every": 4, "validate_every": 2,
        "validate_max_sentences": 2}))
    trainer = Trainer(cfg, log=lambda s: None)
    now, tokens = [0.0], []
    monkeypatch.setattr(nmt.training.time, "perf_counter", lambda: now[0])
    real_step, real_validation = trainer._train_step, trainer._validate_and_maybe_stop

    def one_second_step(*batch):
        now[0] += 1.0
        loss, n = real_step(*batch)
        tokens.append(float(n))
        return loss, n

    def slow_validation(*args, **kwargs):
        now[0] += 100.0
        return real_validation(*args, **kwargs)

    trainer._train_step, trainer._validate_and_maybe_stop = one_second_step, slow_validation
    trainer.train()
    logged = {r["step"]: r["tokens_per_second"] for r in read_metrics(tmp_path / "rate", "train")}
    assert logged == pytest.approx({1: tokens[0], 4: sum(tokens[1:4]) / 3, 8: sum(tokens[4:8]) / 4})


@pytest.mark.parametrize("placement,num_sampled", [("post", 64), ("feed", 0)])
def test_batch_parts_side_by_side_make_the_same_updates(corpus_dir, prepared, tmp_path, monkeypatch, placement,
                                                        num_sampled):
    """training.parallel_parts cuts each batch into row blocks trained side by side: without dropout the
    losses and weights are those of the whole batch, for uneven blocks and for blocks left empty
    (batches of one sentence with two parts). The learning rate is low enough that the sums' different
    order of float additions does not flip the sign of Adam's update of a weight whose gradient is ~0.
    The sampled loss' repeated candidates, merged into one column each, give the losses of the draws."""
    def losses(name, parts, **training):
        cfg = tiny_config(corpus_dir, model={"attention_placement": placement},
                          training={"run_dir": str(tmp_path / name), "max_steps": 12, "validate_every": 100,
                                    "num_sampled": num_sampled, "parallel_parts": parts, "learning_rate": 0.001,
                                    **training})
        logs: list[str] = []
        result = train(config_from_dict(cfg), log=logs.append)
        device = [line for line in logs if line.startswith("device:")]
        assert (f"{parts} parts of each batch side by side" in device[0]) == (parts > 1), device
        return result.losses

    whole = losses("whole", 1)
    for parts in (3,) if placement == "post" else (2,):  # 32 rows: blocks of 11, 11 and 10; of 16 and 16
        assert losses(f"parts{parts}", parts) == pytest.approx(whole, rel=1e-5, abs=1e-5), parts
    if placement == "post":
        assert losses("one_row_parts", 2, batch_size=1) == pytest.approx(losses("one_row", 1, batch_size=1),
                                                                         rel=1e-5, abs=1e-5)
        counts = PreparedData(prepared).unigram_counts
        draws = UnigramSampler(counts, num_sampled).sample(tf.constant([1]), tf.constant([1234, 0], tf.int64))[0]
        assert len(set(draws.numpy())) < num_sampled - 10  # many repeats to merge
        monkeypatch.setattr(nmt.losses, "merge_duplicate_candidates", lambda sampled, expected: (sampled, expected))
        assert losses("draws_as_drawn", 1) == pytest.approx(whole, rel=1e-5, abs=1e-5)


def test_training_thread_plan_shares_the_threads_among_parts():
    from nmt.config import TrainingConfig
    from nmt.training import training_thread_plan

    assert training_thread_plan(TrainingConfig(), cores=2, on_gpu=False) == (2, 1, 2)
    assert training_thread_plan(TrainingConfig(), cores=1, on_gpu=False) == (1, 0, 0)  # TensorFlow's own choice
    assert training_thread_plan(TrainingConfig(threads=8), cores=2, on_gpu=False) == (2, 4, 2)
    assert training_thread_plan(TrainingConfig(threads=6, parallel_parts=3), cores=16, on_gpu=False) == (3, 2, 3)
    assert training_thread_plan(TrainingConfig(parallel_parts=1, threads=2), cores=16, on_gpu=False) == (1, 2, 2)
    assert training_thread_plan(TrainingConfig(parallel_parts=4), cores=16, on_gpu=True) == (1, 0, 0)


def test_cosine_decay_ends_with_the_time_limit_and_resumes_from_its_share(corpus_dir, prepared, tmp_path,
                                                                         monkeypatch):
    """``decay: cosine`` under ``max_minutes``: on a clock where a step takes 6 s of a 1-minute limit, the
    schedule follows the time spent (not the 10 of 1,000 steps) and the run stops near min_learning_rate;
    the share is checkpointed, so a resumed run does not raise the rate again."""
    import math

    import nmt.training
    from nmt.training import Trainer, learning_rate

    cfg = config_from_dict(tiny_config(corpus_dir, training={
        "run_dir": str(tmp_path / "cos"), "max_steps": 1000, "max_minutes": 1, "decay": "cosine",
        "learning_rate": 0.01, "min_learning_rate": 0.0, "log_every": 1, "checkpoint_every": 5,
        "validate_every": 1000, "validate_max_sentences": 2}))
    assert float(learning_rate(0, cfg)) == pytest.approx(0.01, rel=1e-3)  # by steps alone: the peak ...
    assert float(learning_rate(999, cfg)) == pytest.approx(0.0, abs=1e-9)  # ... down to the floor at max_steps
    now = [0.0]
    monkeypatch.setattr(nmt.training.time, "perf_counter", lambda: now[0])

    def timed(trainer, seconds):
        shares, real_step = [], trainer._train_step

        def step(*batch):
            shares.append(float(trainer.time_progress.numpy()))
            now[0] += seconds
            return real_step(*batch)

        trainer._train_step = step
        return trainer.train(), shares

    result, shares = timed(Trainer(cfg, log=lambda s: None), 6.0)
    assert result.step == 10 and "max_minutes" in result.stop_reason
    assert shares == pytest.approx([i / 10 for i in range(10)])
    rates = [r["learning_rate"] for r in read_metrics(tmp_path / "cos", "train")]
    expected = [0.005 * (1 + math.cos(math.pi * max(s, (i + 1) / 1000))) for i, s in enumerate(shares)]
    assert rates == pytest.approx(expected, rel=1e-4) and rates[-1] < 0.001
    now[0] = 0.0  # a new process' clock: the share restored from the checkpoint (0.9) is not undone
    resumed, shares = timed(Trainer(cfg, resume=True, log=lambda s: None), 30.0)
    assert resumed.step == 12 and shares == pytest.approx([0.9, 0.9])
    # a checkpoint written without the share (nmt before session 29) still resumes, at share 0
    import tensorflow as tf

    old = Trainer(cfg, resume=True, log=lambda s: None)
    assert old._restore() == 12 and float(old.time_progress.numpy()) == pytest.approx(0.9)
    without_share = tf.train.Checkpoint(**old._required_state)
    without_share.save_counter.assign(98)  # saved as ckpt-99, the newest
    without_share.save(str(tmp_path / "cos" / "checkpoints" / "ckpt"))
    assert "time_progress" not in str(tf.train.list_variables(str(tmp_path / "cos" / "checkpoints" / "ckpt-99")))
    logs: list[str] = []
    again = Trainer(cfg, resume=True, log=logs.append)
    assert again._restore() == 12 and float(again.time_progress.numpy()) == 0.0, logs  # old restored 0.9
    assert any(line.startswith("resumed from") and "ckpt-99" in line for line in logs), logs
