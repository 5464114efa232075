"""Batch planning (``nmt.dataset.BatchPlanner``): every sentence once an epoch, batch limits, little padding."""

from __future__ import annotations

import numpy as np
import pytest

from nmt.dataset import BatchPlanner, Split


def random_split(sentences: int, seed: int = 0) -> Split:
    """Ids of ``sentences`` pairs, source lengths of 1-40 pieces, target lengths within 4 of them."""
    rng = np.random.default_rng(seed)
    src_len = rng.integers(1, 41, sentences)
    tgt_len = np.clip(src_len + rng.integers(-4, 5, sentences), 1, None)
    offsets = [np.concatenate([[0], np.cumsum(n)]).astype(np.int64) for n in (src_len, tgt_len)]
    return Split(src_ids=rng.integers(4, 100, offsets[0][-1]).astype(np.int32), src_offsets=offsets[0],
                 tgt_ids=rng.integers(4, 100, offsets[1][-1]).astype(np.int32), tgt_offsets=offsets[1])


def padding_share(planner: BatchPlanner, plan: list[np.ndarray]) -> tuple[float, float]:
    """The share of padded positions (source, target) of the padded batches of ``plan``."""
    real, padded = np.zeros(2), np.zeros(2)
    for rows in plan:
        src, tgt_in, _ = planner.make_batch(rows)
        real += [planner.src_len[rows].sum(), planner.tgt_len[rows].sum()]
        padded += [src.size, tgt_in.size]
    return tuple(1 - real / padded)


@pytest.mark.parametrize("batch_by, batch_size", [("sentences", 64), ("tokens", 600)])
def test_epoch_plans_hold_every_sentence_once_within_the_batch_limit(batch_by, batch_size):
    split = random_split(5000)
    planner = BatchPlanner(split, batch_size, batch_by, bucket_width=1, seed=7)
    plan = planner.plan(0)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(len(split)))  # every sentence, once
    if batch_by == "sentences":
        assert sorted(map(len, plan))[1:] == [64] * (len(plan) - 1)  # one short batch: the last cut of the epoch
    else:  # rows x the widest side of the padded batch stays within the token budget
        costs = [len(rows) * max(planner.src_len[rows].max(), planner.tgt_len[rows].max()) for rows in plan]
        assert max(costs) <= batch_size and np.mean(costs) > 0.9 * batch_size
    # windows of 100 batches sorted by the longer side: a tenth of the positions padded at most, where
    # random batches of these lengths would pad about half
    src_pad, tgt_pad = padding_share(planner, plan)
    assert max(src_pad, tgt_pad) < 0.1, (src_pad, tgt_pad)
    random_pad = padding_share(planner, [np.arange(i, min(i + 64, len(split))) for i in range(0, len(split), 64)])
    assert min(random_pad) > 0.4, random_pad
    # seeded: the same plan for the same (seed, epoch), another order the next epoch
    again = BatchPlanner(split, batch_size, batch_by, bucket_width=1, seed=7).plan(0)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(plan, planner.plan(1)))
