"""Distribution on ``tf.distribute``: the strategy, the cluster, per-replica batches.

``training.distribution`` picks the strategy: ``none`` (the default strategy, one device),
``mirrored`` (``MirroredStrategy`` over the GPUs TensorFlow sees), ``multi_worker``
(``MultiWorkerMirroredStrategy`` over the machines listed in ``TF_CONFIG``) or ``auto``
(``mirrored`` when more than one GPU is visible, else ``none``).

Every worker plans the same global batches (same seed, same order) and feeds its replicas
only their rows: replica ``r`` of ``R`` gets the ``r``-th of ``R`` near-equal row blocks, so
the data is sharded without a coordinator. Losses are normalised by the global token count.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

from nmt.errors import InputError


@dataclass(frozen=True)
class Cluster:
    """Where this process stands: its worker index among ``num_workers`` (0 is the chief)."""

    kind: str = "none"
    worker_index: int = 0
    num_workers: int = 1

    @property
    def is_chief(self) -> bool:
        """The chief validates, decides early stopping and writes the run directory."""
        return self.worker_index == 0


def read_cluster(kind: str) -> Cluster:
    """The cluster for ``training.distribution``; for ``multi_worker``, read from ``TF_CONFIG``."""
    if kind != "multi_worker":
        return Cluster(kind)
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise InputError("training.distribution is multi_worker but TF_CONFIG is not set "
                         "(see docs/distributed.md)")
    try:
        spec = json.loads(raw)
        chiefs, workers = spec["cluster"].get("chief", []), spec["cluster"].get("worker", [])
        task_type, task_index = spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError("TF_CONFIG: expected {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                         "\"task\": {\"type\": \"worker\", \"index\": N}}") from None
    if task_type not in ("chief", "worker"):
        raise InputError(f"TF_CONFIG: task type {task_type!r} is not chief or worker")
    count = len(chiefs) + len(workers)
    index = task_index if task_type == "chief" else len(chiefs) + task_index
    if count == 0 or index >= count:
        raise InputError(f"TF_CONFIG: task {task_type} {task_index} is not in the cluster")
    return Cluster(kind, index, count)


def localhost_tf_configs(num_workers: int) -> list[str]:
    """``TF_CONFIG`` values for ``num_workers`` workers on this machine, on free ports (worker i: item i).

    For trying ``multi_worker`` on one machine (the tests, ``scripts/bench_distributed.py``).
    """
    sockets = [socket.socket() for _ in range(num_workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(num_workers)]


def make_strategy(cluster: Cluster) -> Any:
    """Create the strategy; for ``multi_worker`` this must come before TensorFlow runs any op."""
    import tensorflow as tf

    if cluster.kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.get_visible_devices("GPU")
    if cluster.kind == "mirrored" or (cluster.kind == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def replica_rows(n_rows: int, num_replicas: int) -> list[np.ndarray]:
    """The row indices of each replica's block of a global batch of ``n_rows`` rows."""
    return np.array_split(np.arange(n_rows), num_replicas)


def distribute_batch(strategy: Any, batch: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """Per-replica values of a padded global batch: each replica gets its block of rows."""
    import tensorflow as tf

    parts = replica_rows(batch[0].shape[0], strategy.num_replicas_in_sync)

    def value(ctx) -> tuple[Any, ...]:
        rows = parts[ctx.replica_id_in_sync_group]
        return tuple(tf.constant(a[rows]) for a in batch)

    values = strategy.experimental_distribute_values_from_function(value)
    return tuple(values)
