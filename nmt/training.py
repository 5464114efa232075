"""``nmt train``: the compiled train step, checkpoints, validation, resume and the run directory.

A run directory holds ``config.yaml`` (the resolved config), the SentencePiece models and
``manifest.json`` of the prepared data, ``checkpoints/`` (every ``checkpoint_every`` steps,
the last ``keep_checkpoints`` kept), ``best/`` (the checkpoint of the best dev BLEU),
``metrics.jsonl`` (one JSON object per log line and per validation), ``tensorboard/`` and
``train.log``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmt.config import BREAKING_SECTIONS, Config, TrainingConfig, config_from_dict, diff_configs, dump_config, read_yaml
from nmt.distribute import Cluster, distribute_batch, read_cluster
from nmt.errors import InputError, NmtError
from nmt.fileio import atomic_write_text


class TrainingInterrupted(NmtError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class TrainResult:
    """What a training run ended with."""

    run_dir: Path
    step: int
    best_bleu: float
    last_dev: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""
    losses: list[float] = field(default_factory=list)


def configure_tensorflow(cfg: Config, cluster: Cluster) -> tuple[str, Any, int]:
    """Threads, the distribution strategy, determinism, devices and precision.

    Returns ``(device description, strategy, parts per batch)`` (:func:`training_thread_plan`).
    Must run before TensorFlow creates its first op (it configures the runtime).
    """
    from nmt.sysinfo import available_cores, cpu_flags, set_cpu_threads, tensorflow_environment

    tensorflow_environment()
    import keras
    import tensorflow as tf

    from nmt.distribute import make_strategy

    t = cfg.training
    physical = tf.config.list_physical_devices("GPU")  # (listing the logical ones would start the runtime)
    gpus = [] if t.device == "cpu" else physical
    parts, intra, inter = training_thread_plan(t, available_cores(), bool(gpus))
    if intra:
        set_cpu_threads(intra, inter)
    try:
        if physical and not gpus:
            tf.config.set_visible_devices([], "GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # the runtime is already initialised (a second run in one process): keep its settings
    strategy = make_strategy(cluster)
    gpus = tf.config.list_logical_devices("GPU")
    if t.device == "gpu" and not gpus:
        raise NmtError("training.device is 'gpu' but TensorFlow sees no GPU")
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    if t.precision == "bfloat16" and gpus:
        raise NmtError("training.precision bfloat16 is for CPUs; on GPUs training.mixed_precision trains in "
                       "float16 (set training.device: cpu to train on the CPU)")
    mixed = t.mixed_precision == "on" or (t.mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(t.seed)
    device = f"GPU ({len(gpus)} visible: {', '.join(g.name for g in gpus)})" if gpus else "CPU"
    device += ", mixed float16" if mixed else ", float32"
    if t.precision == "bfloat16":
        native = {"avx512_bf16", "amx_tile"} & cpu_flags()
        device += " with bfloat16 matmuls" + ("" if native else
                                               " (this CPU has no AVX-512 BF16 or AMX: emulated, likely slower)")
    if parts > 1:
        device += f", {parts} parts of each batch side by side"
        device += f" ({intra} intra-op thread{'s' if intra > 1 else ''} each)" if intra else ""
    if strategy.num_replicas_in_sync > 1:
        name = "MultiWorkerMirroredStrategy" if cluster.kind == "multi_worker" else type(strategy).__name__
        device += f", {name} with {strategy.num_replicas_in_sync} replicas"
    return device, strategy, parts


def training_thread_plan(t: TrainingConfig, cores: int, on_gpu: bool) -> tuple[int, int, int]:
    """``(parts per batch, intra-op threads, inter-op threads)`` for training; 0 threads: TensorFlow's choice.

    On CPUs a batch is cut into ``parallel_parts`` row blocks (0: one per thread, at most 2)
    whose forward and backward passes are independent branches of the step's graph, run side
    by side on the inter-op threads, each op of a part on ``threads // parts`` intra-op threads;
    their gradients are summed into one update, the same as the whole batch's. The step is
    chains of small ops (the GRU recurrences, one step after the other) that two threads share
    badly, as in decoding (:func:`nmt.decoding.thread_plan`): on 2 cores two parts of 32
    sentences with one thread each train faster than 64 sentences over both threads
    (docs/benchmarks.md). GPUs: one part, TensorFlow's threads unless ``threads`` is set.
    """
    if on_gpu:
        return 1, t.threads, min(2, t.threads)
    threads = t.threads or cores
    parts = t.parallel_parts or min(2, threads)
    if parts == 1 and not t.threads:
        return 1, 0, 0
    return parts, max(1, threads // parts), max(parts, min(2, threads))


def split_batch(src: Any, tgt_in: Any, tgt_out: Any, parts: int) -> list[tuple[Any, Any, Any]]:
    """Cut a padded batch into ``parts`` near-equal row blocks, each trimmed to its own widest row.

    The batches are sorted by length (:class:`~nmt.dataset.BatchPlanner`), so the blocks of
    shorter rows lose padding. A block may be empty (fewer rows than parts): it then adds
    nothing to the loss, its token count or the gradients. Padding id is 0, on the right.
    """
    import tensorflow as tf

    if parts == 1:
        return [(src, tgt_in, tgt_out)]
    rows = tf.shape(src)[0]

    def width(x):
        return tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(tf.not_equal(x, 0), tf.int32), 1)), 1)

    blocks = []
    for k in range(parts):
        a, b = rows * k // parts, rows * (k + 1) // parts
        s, ti, to = src[a:b], tgt_in[a:b], tgt_out[a:b]
        w = width(to)
        blocks.append((s[:, :width(s)], ti[:, :w], to[:, :w]))
    return blocks


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` in order (``kind``: only ``train`` or ``valid`` rows)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [row for row in map(json.loads, lines) if kind is None or row["kind"] == kind]


def learning_rate(step: int | Any, cfg: Config, time_progress: float | Any = 0.0) -> Any:
    """The scheduled learning rate at ``step`` (before any reduce-on-plateau factor).

    ``time_progress`` is the share of ``training.max_minutes`` spent so far (0 without a time
    limit): the cosine decay follows whichever of it and the share of ``max_steps`` is ahead, so
    a run cut by the clock on a slow machine still ends at ``min_learning_rate``.
    """
    import tensorflow as tf

    t = cfg.training
    step = tf.cast(step, tf.float32) + 1.0
    warm = float(max(t.warmup_steps, 1))
    lr = t.learning_rate * tf.minimum(1.0, step / warm)
    after = tf.maximum(step - t.warmup_steps, 0.0)
    if t.decay == "inverse_sqrt":
        lr = lr * tf.math.rsqrt(tf.maximum(step, warm) / warm)
    elif t.decay == "exponential":
        lr = lr * tf.pow(t.decay_rate, after / t.decay_steps)
    elif t.decay == "cosine":
        by_steps = after / float(max(t.max_steps - t.warmup_steps, 1))
        progress = tf.clip_by_value(tf.maximum(by_steps, tf.cast(time_progress, tf.float32)), 0.0, 1.0)
        lr = t.min_learning_rate + (lr - t.min_learning_rate) * 0.5 * (1.0 + tf.cos(math.pi * progress))
    return tf.maximum(lr, t.min_learning_rate) if t.decay != "none" else lr


def _format_time(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """Owns the model, optimizer, checkpoints and the loop of one run directory."""

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        from nmt.dataset import PreparedData

        self.cfg = cfg
        self.cluster = read_cluster(cfg.training.distribution)
        # Every worker restores from the configured run directory; only the chief writes it.
        # The others write their (identical) checkpoints to a private temporary directory,
        # as tf.distribute asks of non-chief workers, and delete it at the end.
        self.restore_dir = Path(cfg.training.run_dir)
        self.run_dir = self.restore_dir if self.cluster.is_chief else \
            Path(tempfile.mkdtemp(prefix=f"nmt-worker{self.cluster.worker_index}-"))
        self._log_file = None
        self._print = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.cluster.is_chief:
            self._print = lambda msg: None
        self.data = PreparedData(cfg.data.prepared_dir)
        # Before the run directory is touched: a configuration the device refuses leaves nothing behind
        # (and an --overwrite'd run in place).
        self.device, self.strategy, self.parallel_parts = configure_tensorflow(cfg, self.cluster)
        if self.cluster.is_chief:
            self._prepare_run_dir(resume, overwrite)
        else:
            self._prepare_run_dir(False, False)
            self.resuming = resume
        self.replicas = self.strategy.num_replicas_in_sync
        self.distributed = self.replicas > 1 or self.cluster.num_workers > 1
        where = f"worker {self.cluster.worker_index} of {self.cluster.num_workers}; " \
            if self.cluster.num_workers > 1 else ""
        self.log(f"device: {where}{self.device}")
        self._build()

    # ----------------------------------------------------------------- setup
    def log(self, message: str) -> None:
        """Print a progress line and append it to ``train.log``."""
        self._print(message)
        if self._log_file is not None:
            self._log_file.write(message + "\n")
            self._log_file.flush()

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        run = self.run_dir
        snapshot = run / "config.yaml"
        self.resuming = False
        if run.exists() and any(run.iterdir()):
            if not snapshot.is_file():
                raise InputError(f"{run}: exists and is not a run directory (no config.yaml); "
                                 "choose another training.run_dir")
            if overwrite:
                shutil.rmtree(run)
            elif resume:
                old = config_from_dict(read_yaml(snapshot), str(snapshot))
                diffs = diff_configs(old, self.cfg)
                breaking = [d for d in diffs if d[0].split(".")[0] in BREAKING_SECTIONS]
                if breaking:
                    keys = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in breaking)
                    raise InputError(f"{snapshot}: cannot resume, these keys differ from the run's config "
                                     f"and would break its checkpoints: {keys}")
                self.resuming = True
                self._changed = diffs
            else:
                raise InputError(f"{run}: run directory exists; use --resume to continue it "
                                 "or --overwrite to start again")
        try:
            run.mkdir(parents=True, exist_ok=True)
            for name in {self.data.manifest["vocab"]["src_model"], self.data.manifest["vocab"]["tgt_model"],
                         "manifest.json"}:
                shutil.copyfile(self.data.path / name, run / f".{name}.tmp")
                os.replace(run / f".{name}.tmp", run / name)
            atomic_write_text(snapshot, dump_config(self.cfg))
            self._log_file = open(run / "train.log", "a", encoding="utf-8")
        except OSError as exc:
            raise NmtError(f"{run}: cannot write ({exc.strerror or exc})") from None
        if self.resuming:
            for key, a, b in self._changed:
                self.log(f"resume: {key} changed from {a!r} to {b!r}")

    def _build(self) -> None:
        import keras
        import tensorflow as tf

        from nmt.dataset import BatchPlanner
        from nmt.decoding import Decoder
        from nmt.losses import UnigramSampler
        from nmt.model import build_model
        from nmt.optimizers import make_optimizer

        cfg, t = self.cfg, self.cfg.training
        with self.strategy.scope():
            self.model = build_model(cfg.model, self.data.src_vocab_size, self.data.tgt_vocab_size)
            if cfg.model.output_bias_init == "unigram":  # a resumed run's checkpoint then overwrites it
                self.model.projection.init_bias_from_counts(self.data.unigram_counts)
            self.plateau_scale = tf.Variable(1.0, trainable=False, name="plateau_scale")
            self.time_progress = tf.Variable(0.0, trainable=False, name="time_progress")
            schedule = make_schedule(cfg, self.plateau_scale, self.time_progress)
            # Keras clips each replica's gradient before summing them; with several replicas the
            # step sums the gradients first and hands each replica 1/R of the sum, so clipping at
            # clip_norm/R clips the global gradient at clip_norm (see _make_train_step).
            clip = t.clip_norm / (self.replicas if self.distributed else 1)
            optimizer = make_optimizer(t.optimizer, learning_rate=schedule,
                                       global_clipnorm=clip if t.clip_norm > 0 else None)
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
            self.best_bleu = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_bleu")
            self.bad_validations = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_validations")
            self.plateau_bad = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_bad")
        # Dropout's seed-generator states are Keras variables that tf.train.Checkpoint does not
        # reach through the layers; saving them makes a resumed run draw the same masks.
        random_state = tf.Module()
        random_state.variables_list = list(self.model.non_trainable_variables)
        self._required_state = dict(
            model=self.model, optimizer=self.optimizer, random_state=random_state, epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            best_bleu=self.best_bleu, bad_validations=self.bad_validations, plateau_scale=self.plateau_scale,
            plateau_bad=self.plateau_bad)
        self.checkpoint = tf.train.Checkpoint(**self._required_state, time_progress=self.time_progress)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.run_dir / "checkpoints",
                                                  max_to_keep=t.keep_checkpoints, checkpoint_name="ckpt")
        self.best_manager = tf.train.CheckpointManager(self.checkpoint, self.run_dir / "best", max_to_keep=1,
                                                       checkpoint_name="ckpt")
        self.sampled = t.uses_sampled_softmax(self.data.tgt_vocab_size)
        self.sampler = UnigramSampler(self.data.unigram_counts, t.num_sampled, t.sampler_distortion) \
            if self.sampled else None
        self.planner = BatchPlanner(self.data.split("train"), t.batch_size, t.batch_by, t.bucket_width, t.seed)
        self.dev = self.data.split("dev")
        self.dev_planner = BatchPlanner(self.dev, 64, "sentences", 1, 0)
        # What validation decodes and scores never changes: read it once.
        n_bleu = min(len(self.dev), t.validate_max_sentences)
        self.dev_sentences = [self.dev.src_ids[self.dev.src_offsets[i]:self.dev.src_offsets[i + 1]]
                              .astype(np.int32).tolist() for i in range(n_bleu)]
        self.dev_refs = self.data.text("dev", "tgt")[:n_bleu]
        self.dev_srcs = self.data.text("dev", "src")[:n_bleu]
        self.tgt_vocab = self.data.vocabs()[1]
        self.decoder = Decoder(self.model, cfg.decoding)
        # XLA recompiles for every batch shape and measured slower on CPUs (docs/benchmarks.md),
        # so ``auto`` leaves it off.
        self.xla = t.xla == "on"
        # Repeated sampled candidates are merged into one column each (the same loss from fewer
        # columns; a shape XLA cannot compile). Read when the step is traced: a benchmark switch
        # (scripts/bench_optimizer.py --unmerged), not a setting.
        self.merge_candidates = not self.xla
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()

    # ----------------------------------------------------------------- steps
    def _loss(self, src, tgt_in, tgt_out, training: bool, seed=None):
        import tensorflow as tf

        from nmt.losses import full_softmax_loss, merge_duplicate_candidates, sampled_softmax_loss

        hidden = self.model((src, tgt_in), training=training)
        mask = tf.not_equal(tgt_out, 0)
        if training and self.sampled:
            flat = tf.reshape(hidden, [-1, hidden.shape[-1]])
            labels = tf.reshape(tgt_out, [-1])
            sampled, true_exp, sampled_exp = self.sampler.sample(labels, seed)
            if self.merge_candidates:
                sampled, sampled_exp = merge_duplicate_candidates(sampled, sampled_exp)
            proj = self.model.projection
            losses = sampled_softmax_loss(proj.weights_by_row(), proj.bias, labels, flat,
                                          sampled, true_exp, sampled_exp)
            losses = tf.reshape(losses, tf.shape(tgt_out))
        else:
            smoothing = self.cfg.training.label_smoothing if training else 0.0
            losses = full_softmax_loss(self.model.logits(hidden), tgt_out, smoothing)
        mask = tf.cast(mask, tf.float32)
        return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)

    def _make_train_step(self):
        """The compiled update: loss over the global batch's target tokens, gradients summed over replicas."""
        import tensorflow as tf

        from nmt.model.fused import tensorflow_ops_only
        from nmt.model.ops import matmul_precision

        model, optimizer, strategy = self.model, self.optimizer, self.strategy
        seed0 = tf.constant(self.cfg.training.seed, tf.int64)
        distributed, replicas, parts = self.distributed, float(self.replicas), self.parallel_parts
        clipping = self.cfg.training.clip_norm > 0
        precision = self.cfg.training.precision
        spec = [tf.TensorSpec([None, None], tf.int32)] * 3
        SUM = tf.distribute.ReduceOp.SUM

        def step(src, tgt_in, tgt_out):
            # the same seed on every replica: all draw the same sampled-softmax candidates
            seed = tf.stack([seed0, tf.cast(optimizer.iterations, tf.int64)])
            context = tf.distribute.get_replica_context()
            # training.precision: the forward and backward matmuls (the hand-written GRU gradients too);
            # XLA cannot compile nmt's fused CPU kernel, so an XLA step is traced with TensorFlow's ops
            with matmul_precision(precision), tensorflow_ops_only() if self.xla else contextlib.nullcontext():
                with tf.GradientTape() as tape:
                    sums = [self._loss(*part, True, seed) for part in split_batch(src, tgt_in, tgt_out, parts)]
                    loss_sum, tokens = tf.add_n([s for s, _ in sums]), tf.add_n([n for _, n in sums])
                    global_tokens = context.all_reduce(SUM, tokens) if distributed else tokens
                    loss = loss_sum / tf.maximum(global_tokens, 1.0)
                    scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
                grads = tape.gradient(scaled, model.trainable_variables)
            if distributed and clipping:
                summed = context.all_reduce(SUM, [tf.convert_to_tensor(g) for g in grads])
                grads = [g / replicas for g in summed]
            optimizer.apply(grads, model.trainable_variables)  # Keras sums the replicas' gradients
            return loss, tokens

        # The steps' Python is plain graph-building code (loops are explicit ``tf.while_loop``s), so
        # they are traced without AutoGraph, which would only rewrite the source of every call.
        compiled = tf.function(step, jit_compile=True, autograph=False) if self.xla else step

        def train_step(src, tgt_in, tgt_out):
            loss, tokens = strategy.run(compiled, args=(src, tgt_in, tgt_out))
            return strategy.reduce(SUM, loss, axis=None), strategy.reduce(SUM, tokens, axis=None)

        if distributed:  # per-replica inputs: let the trace generalise over batch shapes
            return tf.function(train_step, reduce_retracing=True, autograph=False)
        return tf.function(train_step, input_signature=spec, autograph=False)

    def _make_eval_step(self):
        import tensorflow as tf

        spec = [tf.TensorSpec([None, None], tf.int32)] * 3

        @tf.function(input_signature=spec, autograph=False)
        def eval_step(src, tgt_in, tgt_out):
            return self._loss(src, tgt_in, tgt_out, False)

        return eval_step

    def _make_agree(self):
        """A collective that returns (the maximum over workers, the chief's values) of a float vector."""
        import tensorflow as tf

        strategy = self.strategy

        @tf.function(autograph=False)
        def agree(values):
            def fn(v):
                rows = tf.distribute.get_replica_context().all_gather(v[None], axis=0)  # [replicas, n]
                return tf.reduce_max(rows, axis=0), rows[0]
            most, chief = strategy.run(fn, args=(values,))
            return strategy.experimental_local_results(most)[0], strategy.experimental_local_results(chief)[0]

        def call(values: list[float]) -> tuple[list[float], list[float]]:
            most, chief = agree(tf.constant(values, tf.float32))
            return most.numpy().tolist(), chief.numpy().tolist()

        return call

    # ----------------------------------------------------------------- validation
    def validate(self) -> dict[str, Any]:
        """Dev loss and perplexity (full softmax) and greedy-decoded dev BLEU."""
        from nmt.decoding import translate_ids
        from nmt.metrics import bleu

        start = time.perf_counter()
        total, count = 0.0, 0.0
        for i in range(0, len(self.dev), 64):
            rows = np.arange(i, min(i + 64, len(self.dev)))
            loss_sum, n = self._eval_step(*self.dev_planner.make_batch(rows))
            total += float(loss_sum)
            count += float(n)
        dev_loss = total / max(count, 1.0)
        n_bleu, refs, srcs = len(self.dev_sentences), self.dev_refs, self.dev_srcs
        results = translate_ids(self.decoder, self.dev_sentences, self.cfg.decoding.batch_size, beam=1,
                                with_scores=False)
        hyps = self.tgt_vocab.decode([r[0][0] for r in results])
        score = bleu(hyps, refs)
        return {"dev_loss": dev_loss, "dev_ppl": math.exp(min(dev_loss, 50.0)), "dev_bleu": score,
                "dev_sentences": n_bleu, "seconds": time.perf_counter() - start,
                "examples": [{"src": srcs[i], "ref": refs[i], "hyp": hyps[i]} for i in range(min(3, n_bleu))]}

    # ----------------------------------------------------------------- loop
    def _restore(self) -> int:
        """Restore the newest readable checkpoint when resuming; return its step (0 if none).

        A checkpoint that cannot be read (cut short by a kill or a full disk, or damaged since)
        is skipped with a warning in favour of the one before it.
        """
        import tensorflow as tf

        from nmt.checkpoints import list_checkpoints, remove_partial_saves, restore

        for folder in (self.run_dir / "checkpoints", self.run_dir / "best"):
            for name in remove_partial_saves(folder):
                self.log(f"removed {folder / name}, left by an interrupted save")
        if not self.resuming:
            return 0
        candidates = list_checkpoints(self.restore_dir / "checkpoints")
        failures: list[str] = []
        for prefix in candidates:
            try:
                restore(tf.train.Checkpoint(**self._required_state), prefix, partial=True)
                # The cosine schedule's share of the time limit is optional: checkpoints written
                # before it existed (session 29) have none, and resume at 0.
                tf.train.Checkpoint(time_progress=self.time_progress).restore(prefix).expect_partial()
            except InputError as exc:
                failures.append(str(exc))
                self.log(f"warning: skipping {exc}")
                continue
            step = int(self.optimizer.iterations.numpy())
            self.log(f"resumed from {prefix} at step {step} (epoch {int(self.epoch.numpy())}, "
                     f"batch {int(self.batch_in_epoch.numpy())})")
            self._trim_metrics(step)
            return step
        if failures:
            raise InputError(f"cannot resume: no readable checkpoint in {self.restore_dir / 'checkpoints'} "
                             f"({failures[0]})")
        self.log("resume: no checkpoint yet, starting from step 0")
        self._trim_metrics(0)
        return 0

    def _trim_metrics(self, step: int) -> None:
        """Drop metrics rows written after ``step`` by a run that stopped before checkpointing them."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for row in rows:
            try:
                if json.loads(row)["step"] <= step:
                    kept.append(row)
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short by a kill
        if len(kept) != len(rows):
            atomic_write_text(path, "".join(kept))
            self.log(f"resume: dropped {len(rows) - len(kept)} metrics row(s) after step {step}")

    def _save(self, step: int, manager: Any = None) -> str:
        """Save a checkpoint (the regular series, or ``manager``'s) with the current data position.

        A failed write (a full disk) removes its partial files and stops training with the
        last good checkpoint named; the state file still names that one.
        """
        import tensorflow as tf

        from nmt.checkpoints import error_reason, remove_partial_saves

        manager = manager or self.manager
        self.epoch.assign(self.position[0])
        self.batch_in_epoch.assign(self.position[1])
        try:
            return manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as exc:
            remove_partial_saves(manager.directory)
            raise NmtError(f"{manager.directory}: cannot write the checkpoint of step {step} "
                           f"({error_reason(exc).rpartition('; ')[2]}); "
                           f"the last good checkpoint is {self.manager.latest_checkpoint or 'none'}") from None

    def train(self) -> TrainResult:
        """Run the training loop until max_steps, max_minutes, early stopping or a signal."""
        import tensorflow as tf

        cfg, t = self.cfg, self.cfg.training
        step = self._restore()
        self.position = (int(self.epoch.numpy()), int(self.batch_in_epoch.numpy()))
        from tensorflow.core.framework import summary_pb2

        writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        # TensorBoard's scalar plugin reads events tagged this way (no tensorboard package needed).
        scalar_metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()
        metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        result = TrainResult(self.run_dir, step, float(self.best_bleu.numpy()))
        stop_signal: list[int] = []
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum, frame):  # noqa: ARG001
            stop_signal.append(signum)

        for s in previous:
            try:
                signal.signal(s, on_signal)
            except ValueError:  # not the main thread
                pass
        n_params = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        loss_kind = f"sampled softmax ({t.num_sampled} of {self.data.tgt_vocab_size})" if self.sampled \
            else f"full softmax over {self.data.tgt_vocab_size}"
        self.log(f"model: {cfg.model.attention_placement} attention, {n_params:,} parameters; loss: {loss_kind}; "
                 f"XLA: {'on' if self.xla else 'off'}; train pairs: {len(self.planner.split):,}")

        def record(kind: str, values: dict[str, Any]) -> None:
            row = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            with writer.as_default(step=step):
                for k, v in values.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        tf.summary.write(f"{kind}/{k}", tf.constant(float(v), tf.float32), metadata=scalar_metadata)

        start = time.perf_counter()
        window_tokens, window_loss, window_steps, window_start = 0.0, 0.0, 0, time.perf_counter()
        # Padding a batch is one vectorised numpy gather (~0.1 ms): feeding it directly is faster
        # than a tf.data generator pipeline, whose thread competes for the two cores.
        batches = self.planner.batches(*self.position)
        last_saved = step
        if self.distributed:
            self._agree = self._make_agree()
            most, _ = self._agree([float(step), -float(step)])
            if most[0] != -most[1]:
                raise NmtError(f"the workers restored different steps ({-most[1]:.0f} to {most[0]:.0f}); a "
                               "multi-worker resume needs training.run_dir on a filesystem every worker can read")

        def out_of_time() -> bool:
            return t.max_minutes is not None and time.perf_counter() - start >= t.max_minutes * 60

        # The cosine schedule follows the clock too under a time limit (see learning_rate); the
        # share never goes back, so a resumed run continues from where the last one left the rate.
        follows_time = t.decay == "cosine" and t.max_minutes is not None
        time_progress_at_start = float(self.time_progress.numpy())

        def time_share() -> float:
            spent = (time.perf_counter() - start) / (t.max_minutes * 60) if follows_time else 0.0
            return max(time_progress_at_start, min(spent, 1.0))

        def agree_to_stop(early: bool) -> bool:
            """With several workers, stop decisions, the plateau factor and the time share are taken together."""
            most, chief = self._agree([float(out_of_time()), float(bool(stop_signal)), float(early),
                                       float(self.plateau_scale.numpy()), time_share()])
            self.plateau_scale.assign(chief[3])
            self.time_progress.assign(chief[4])  # every replica steps at the chief's rate
            if most[1] and not stop_signal:
                stop_signal.append(signal.SIGTERM)  # another worker was signalled: save and stop with it
            if most[0] and not result.stop_reason:
                result.stop_reason = f"reached training.max_minutes={t.max_minutes:g}"
            if most[2] and not result.stop_reason:
                result.stop_reason = "early stopping (decided by the chief)"
            return bool(most[0] or most[1] or most[2])

        try:
            for epoch, index, (src, tgt_in, tgt_out) in batches:
                if step >= t.max_steps:
                    result.stop_reason = f"reached training.max_steps={t.max_steps}"
                    break
                if not self.distributed and out_of_time():
                    result.stop_reason = f"reached training.max_minutes={t.max_minutes:g}"
                    break
                if self.distributed:
                    if src.shape[0] < self.replicas:  # a tail batch too small to give every replica a row
                        continue
                    loss, tokens = self._train_step(*distribute_batch(self.strategy, (src, tgt_in, tgt_out)))
                else:
                    if follows_time:
                        self.time_progress.assign(time_share())
                    loss, tokens = self._train_step(src, tgt_in, tgt_out)
                loss = float(loss)
                if not math.isfinite(loss):
                    latest = self.manager.latest_checkpoint or "none"
                    raise NmtError(f"training loss is {loss} at step {step + 1}; stopped without saving "
                                   f"(last good checkpoint: {latest})")
                step += 1
                self.position = (epoch, index + 1)
                result.losses.append(loss)
                window_tokens += float(tokens)
                window_loss += loss
                window_steps += 1
                if step % t.log_every == 0 or step == 1:
                    elapsed = time.perf_counter() - window_start
                    lr = float(learning_rate(step, cfg, self.time_progress) * self.plateau_scale)
                    tps = window_tokens / max(elapsed, 1e-9)
                    remaining = [(t.max_steps - step) * elapsed / window_steps]
                    if t.max_minutes is not None:
                        remaining.append(t.max_minutes * 60 - (time.perf_counter() - start))
                    self.log(f"step {step}/{t.max_steps} | epoch {int(epoch) + 1} "
                             f"| loss {window_loss / window_steps:.3f} "
                             f"| lr {lr:.2e} | {tps:,.0f} tok/s | elapsed {_format_time(time.perf_counter() - start)} "
                             f"| ETA {_format_time(max(0.0, min(remaining)))}")
                    record("train", {"loss": window_loss / window_steps, "learning_rate": lr,
                                     "tokens_per_second": tps, "window_seconds": elapsed, "epoch": int(epoch) + 1})
                    window_tokens, window_loss, window_steps, window_start = 0.0, 0.0, 0, time.perf_counter()
                early = False
                if step % t.validate_every == 0:
                    paused = time.perf_counter()
                    early = self.cluster.is_chief and self._validate_and_maybe_stop(step, record, result)
                    window_start += time.perf_counter() - paused  # tokens/s counts training time only
                    if early and not self.distributed:
                        break
                if self.distributed and (step % t.log_every == 0 or step % t.validate_every == 0):
                    if agree_to_stop(early):
                        if step % t.checkpoint_every == 0:
                            self._save(step)
                            last_saved = step
                        break
                if step % t.checkpoint_every == 0:
                    self._save(step)
                    last_saved = step
                if stop_signal and not self.distributed:
                    break
        except OSError as exc:
            raise self._write_error(exc) from None
        finally:
            for s, handler in previous.items():
                try:
                    signal.signal(s, handler)
                except ValueError:
                    pass
        try:
            if stop_signal:
                path = self._save(step) if step != last_saved or not self.manager.latest_checkpoint \
                    else self.manager.latest_checkpoint
                name = signal.Signals(stop_signal[0]).name
                raise TrainingInterrupted(f"{name} received: saved {path} at step {step}; "
                                          "continue with nmt train --resume", stop_signal[0])
            if self.cluster.is_chief and (step % t.validate_every != 0 or not result.last_dev):
                self._validate_and_maybe_stop(step, record, result, final=True)
            if step != last_saved or not self.manager.latest_checkpoint:
                self._save(step)
        except OSError as exc:
            raise self._write_error(exc) from None
        finally:
            metrics_file.close()
            writer.close()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if not self.cluster.is_chief:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                result.run_dir = self.restore_dir
        result.step = step
        result.best_bleu = float(self.best_bleu.numpy())
        self.log(f"done at step {step}: {result.stop_reason or 'stopped'}; best dev BLEU {result.best_bleu:.2f}; "
                 f"run directory {self.run_dir}")
        return result

    def _write_error(self, exc: OSError) -> NmtError:
        """A failed write in the run directory (a full disk): say what failed and what is kept."""
        where = exc.filename or self.run_dir
        return NmtError(f"{where}: cannot write ({exc.strerror or exc}); training stopped, "
                        f"the last good checkpoint is {self.manager.latest_checkpoint or 'none'}")

    def _validate_and_maybe_stop(self, step: int, record, result: TrainResult, final: bool = False) -> bool:
        t = self.cfg.training
        dev = self.validate()
        result.last_dev = dev
        improved = dev["dev_bleu"] > float(self.best_bleu.numpy())
        if improved:
            self.best_bleu.assign(dev["dev_bleu"])
            self.bad_validations.assign(0)
            self.plateau_bad.assign(0)
        else:
            self.bad_validations.assign_add(1)
            self.plateau_bad.assign_add(1)
        if t.decay == "plateau" and int(self.plateau_bad.numpy()) >= t.plateau_patience:
            self.plateau_scale.assign(self.plateau_scale * t.decay_rate)
            self.plateau_bad.assign(0)
            self.log(f"dev BLEU has not improved for {t.plateau_patience} validations: learning rate x{t.decay_rate:g}")
        if improved:
            self._save(step, self.best_manager)
        record("valid", {k: v for k, v in dev.items() if k != "examples"})
        self.log(f"validation at step {step}: dev loss {dev['dev_loss']:.3f} | ppl {dev['dev_ppl']:.2f} | "
                 f"BLEU {dev['dev_bleu']:.2f}{' (best)' if improved else ''} | {dev['seconds']:.1f}s")
        for ex in dev["examples"]:
            self.log(f"  src: {ex['src']}\n  ref: {ex['ref']}\n  hyp: {ex['hyp']}")
        if not final and t.patience and int(self.bad_validations.numpy()) >= t.patience:
            result.stop_reason = f"early stopping: no dev BLEU gain in {t.patience} validations"
            return True
        return False


def make_schedule(cfg: Config, plateau_scale: Any, time_progress: Any = 0.0) -> Any:
    """A Keras learning-rate schedule: :func:`learning_rate` (at ``time_progress``, a variable the
    training loop sets) times the reduce-on-plateau factor."""
    import keras

    class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return learning_rate(step, cfg, time_progress) * plateau_scale

        def get_config(self) -> dict:
            return {}

    return WarmupDecaySchedule()


def train(cfg: Config, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train the model described by ``cfg`` into ``cfg.training.run_dir``."""
    return Trainer(cfg, resume=resume, overwrite=overwrite, log=log).train()
