"""Model layers: every weight is made by ``build_model`` from shapes, attention masks and normalises,
steps equal the full pass, the fused CPU GRU and the feed decoder's CPU loop equal Keras' GRU and
autodiff, checkpoints round-trip every weight, the sampled loss equals TensorFlow's, the fused Adam
equals Keras' Adam, the lazy Adam moves only the rows a sparse gradient touches, and bfloat16 matmuls
(training.precision) reach every weight's product, the GRU loops' included."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt.config import ModelConfig
from nmt.losses import UnigramSampler, full_softmax_loss, merge_duplicate_candidates, sampled_softmax_loss
from nmt.model import BahdanauAttention, build_model, fused, gru
from nmt.model import decoder as decoder_module
from nmt.model.ops import matmul_precision
from nmt.optimizers import FusedAdam, LazyAdam
from tests.conftest import graph_ops

MASK = tf.constant([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]) > 0


def test_attention_masks_padding_and_rows_sum_to_one():
    att = BahdanauAttention(7)
    memory = tf.random.normal([3, 6, 4])
    keys = att.keys(memory)
    context, weights = att(tf.random.normal([3, 5]), keys, memory, MASK)
    assert context.shape == (3, 4) and weights.shape == (3, 6)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), 1.0, rtol=1e-6)
    assert float(tf.reduce_max(tf.where(MASK, 0.0, weights))) == 0.0
    context, weights = att(tf.random.normal([3, 2, 5]), keys, memory, MASK)  # a query per target position
    assert context.shape == (3, 2, 4) and weights.shape == (3, 2, 6)
    assert BahdanauAttention.from_config(att.get_config()).units == 7


def test_fused_attention_kernel_equals_tensorflows_ops_in_values_and_gradients(tmp_path, monkeypatch, capsys):
    """The fused CPU kernel (nmt/model/additive_scores.cc) is built where a C++ compiler is, is what
    the attention runs on by default, and gives TensorFlow's ops' weights, contexts and gradients
    (a query per sentence and per target position, masked positions included); a compiler that
    fails is reported in one line and leaves no file behind."""
    if shutil.which("g++") or shutil.which("c++") or os.environ.get("CXX"):
        assert fused.kernel() is not None
    if fused.kernel() is None:
        pytest.skip("no C++ compiler: the attention runs on TensorFlow's ops")
    att = BahdanauAttention(16)
    memory = tf.random.normal([3, 6, 5])
    att.keys(memory)
    weights = att.trainable_variables

    def op_types(fn, query):
        return {n.op for n in fn.get_concrete_function(query).graph.as_graph_def().node}

    @tf.function
    def run(query):
        with tf.GradientTape() as tape:
            tape.watch([query, memory])
            context, attention = att(query, att.keys(memory), memory, MASK)
            loss = tf.reduce_sum(tf.sin(3 * context)) + tf.reduce_sum(tf.sin(5 * attention))
        return [context, attention] + tape.gradient(loss, [query, memory] + weights)

    for query in (tf.random.normal([3, 4]), tf.random.normal([3, 7, 4])):
        assert "NmtAdditiveScores" in op_types(run, query) and "Tanh" not in op_types(run, query)
        with_kernel = run(query)
        with fused.tensorflow_ops_only():
            run_tf = tf.function(run.python_function)
            assert "NmtAdditiveScores" not in op_types(run_tf, query) and "Tanh" in op_types(run_tf, query)
            with_ops = run_tf(query)
            with ThreadPoolExecutor(1) as pool:  # the scope holds for traces in other threads (the decoder's)
                assert "Tanh" in pool.submit(op_types, tf.function(run.python_function), query).result()
        for a, b in zip(with_kernel, with_ops):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5 * max(1.0, float(tf.reduce_max(tf.abs(b)))))

    monkeypatch.setenv("NMT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
    with pytest.raises(RuntimeError, match="^false failed") as failure:
        fused.built_kernel_path()
    assert "\n" not in str(failure.value) and list((tmp_path / "kernels").iterdir()) == []
    capsys.readouterr()
    assert fused.kernel.__wrapped__() is None  # the uncached loader: one warning line, TensorFlow's ops
    assert capsys.readouterr().err.splitlines() == [
        "warning: the fused attention kernel is unavailable (false failed: ); using TensorFlow's ops (same results, "
        "slower)"]
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no compiler at all
    with pytest.raises(RuntimeError, match=r"^no C\+\+ compiler found \(set CXX, or install g\+\+\)$"):
        fused.built_kernel_path()


@pytest.mark.parametrize("placement", ["post", "feed"])
def test_step_by_step_equals_teacher_forcing_and_checkpoint_round_trip(placement, tmp_path, monkeypatch):
    cfg = ModelConfig(embedding_dim=8, encoder_units=8, encoder_layers=2, decoder_units=12, attention_units=6,
                      attentional_units=10, attention_placement=placement, dropout=0.0)
    model = build_model(cfg, 30, 40)
    built = [(w.path, tuple(w.shape)) for w in model.weights]  # every weight made from shapes, before any call
    src = tf.constant([[5, 6, 7, 3, 0], [8, 9, 3, 0, 0]])
    tgt = tf.constant([[2, 10, 11, 12], [2, 13, 14, 15]])
    hidden, weights = model.hidden_and_attention((src, tgt))
    memory, keys, mask, state = model.encode(src)
    # a loaded model's copies, made once: every target id's input projection, kernels in float32 or bfloat16,
    # the few-row products' kernels transposed or not (decoder.weights_first_faster: this CPU's choice)
    frozen = {}
    monkeypatch.setattr(decoder_module, "TRANSPOSED_ROWS", (2, 2))  # this batch's 2 rows use the transposed copies
    for transposed in (False, True):
        monkeypatch.setattr(decoder_module, "weights_first_faster", lambda transposed=transposed: transposed)
        for dtype in (tf.float32, tf.bfloat16):
            frozen[dtype, transposed] = model.decoder.step_weights(dtype)
    assert frozen[tf.float32, False]["input_table"].shape == (40, 3 * 12)
    assert frozen[tf.bfloat16, False]["recurrent_kernel"].dtype == tf.bfloat16
    assert frozen[tf.bfloat16, True]["recurrent_kernel_transposed"].shape == (3 * 12, 12)
    assert frozen[tf.bfloat16, True]["recurrent_kernel_transposed"].dtype == tf.bfloat16
    assert frozen[tf.bfloat16, True]["recurrent_bias"].dtype == tf.float32
    assert not any(name.endswith("_transposed") for name in frozen[tf.float32, False])
    outputs = {}
    for kind in (None, *frozen):
        h_t, outputs[kind] = state, []
        for t in range(4):
            h, h_t, _ = model.decoder.step(tgt[:, t], h_t, memory, keys, mask, frozen.get(kind))
            assert h.dtype == tf.float32
            outputs[kind].append(h)
        outputs[kind] = tf.stack(outputs[kind], 1).numpy()
    for kind in (None, (tf.float32, False), (tf.float32, True)):
        np.testing.assert_allclose(outputs[kind], hidden.numpy(), atol=1e-5)
    # bfloat16 products: close to float32 (8-bit mantissas), but not the same computation
    for transposed in (False, True):
        np.testing.assert_allclose(outputs[tf.bfloat16, transposed], hidden.numpy(), atol=3e-2)
        assert np.abs(outputs[tf.bfloat16, transposed] - hidden.numpy()).max() > 1e-5
    assert float(tf.reduce_max(weights[1, :, 3:])) == 0.0  # padding never attended
    model.logits(hidden)
    assert [(w.path, tuple(w.shape)) for w in model.weights] == built  # no call made one more
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = build_model(cfg, 30, 40)
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    assert len(fresh.weights) == len(model.weights)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("placement", ["post", "feed"])
def test_cpu_loops_equal_keras_and_autodiff_in_outputs_and_gradients(placement, monkeypatch):
    """On CPUs the GRUs run nmt.model.gru's loop and the feed decoder nmt.model.feed's, each with a
    hand-written backward pass; they must compute what keras.layers.GRU and the decoder's plain
    loop differentiated by TensorFlow compute, gradients included, with the GRU loops' states in
    either layout, and right padding must not change the real positions."""
    cfg = ModelConfig(embedding_dim=8, encoder_units=6, encoder_layers=2, decoder_units=10, attention_units=6,
                      attentional_units=7, dropout=0.0, attention_placement=placement)
    model = build_model(cfg, 30, 40)
    attention = model.decoder.attention
    for var, scale in ((attention.score_layer.kernel, 4.0), (model.encoder.embedding.embeddings, 20.0),
                       (model.decoder.embedding.embeddings, 20.0)):  # sharper attention, larger states:
        var.assign(var * scale)  # gradients of the attention that are not vanishingly small
    src = tf.constant([[5, 6, 7, 8, 9, 3], [8, 9, 3, 0, 0, 0], [4, 3, 0, 0, 0, 0]])
    tgt = tf.constant([[2, 10, 11, 12], [2, 13, 14, 15], [2, 16, 0, 0]])

    def run(use_keras: bool, unit_major: bool = False):
        monkeypatch.setattr(gru, "cudnn_available", lambda: use_keras)
        monkeypatch.setattr(gru, "unit_major_recurrence", lambda units: unit_major)

        @tf.function
        def loss_and_grads(src, tgt):
            with tf.GradientTape() as tape:
                hidden, weights = model.hidden_and_attention((src, tgt), training=True)
                memory, _, _, state = model.encode(src, training=True)
                loss = tf.reduce_sum(tf.sin(hidden)) + tf.reduce_sum(tf.sin(state)) \
                    + tf.reduce_sum(tf.sin(3 * weights)) \
                    + tf.reduce_sum(tf.sin(memory) * tf.cast(src > 0, tf.float32)[:, :, None])
            return hidden, weights, tape.gradient(loss, model.trainable_variables)

        return loss_and_grads(src, tgt)

    keras_hidden, keras_weights, keras_grads = run(True)
    for unit_major in (False, True):  # the loops' states as [B, U] and as [U, B] (gru.unit_major_recurrence)
        fused_hidden, fused_weights, fused_grads = run(False, unit_major)
        np.testing.assert_allclose(fused_hidden.numpy(), keras_hidden.numpy(), atol=1e-6)
        np.testing.assert_allclose(fused_weights.numpy(), keras_weights.numpy(), atol=1e-6)
        compared = []
        for var, a, b in zip(model.trainable_variables, fused_grads, keras_grads):
            if a is None and b is None:  # the output projection is not in this loss
                continue
            b = tf.convert_to_tensor(b).numpy()
            a = tf.convert_to_tensor(a).numpy()
            np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max(), err_msg=var.path)  # relative to its scale
            compared.append(var.path)
        # kernel, recurrent kernel, bias of 4 encoder directions and the decoder; the attention's 4 weights
        assert sum("gru" in p for p in compared) == 3 * 5
        assert sum("/attention/" in p or "/key/" in p for p in compared) == 4
        # the same sentences with two more columns of padding give the same real positions (forward-only loops)
        padded = tf.pad(src, [[0, 0], [0, 2]])
        memory, _, mask, state = model.encode(padded)
        monkeypatch.setattr(gru, "unit_major_recurrence", lambda units: False)
        memory_ref, _, _, state_ref = model.encode(src)
        np.testing.assert_allclose(state.numpy(), state_ref.numpy(), atol=1e-6)
        np.testing.assert_allclose(tf.where(mask[:, :6, None], memory[:, :6], 0.0).numpy(),
                                   tf.where(mask[:, :6, None], memory_ref, 0.0).numpy(), atol=1e-6)


def test_bfloat16_matmuls_reach_every_weight_and_gradients_stay_float32():
    """training.precision bfloat16: inside ops.matmul_precision every product with a weight, forward
    and backward, runs in bfloat16, the GRU loops' included (their kernels cast once, outside the
    loops); the attention's score and context products stay float32; the gradients are float32 and
    agree with float32's to bfloat16's precision; outside the scope nothing is bfloat16."""
    cfg = ModelConfig(embedding_dim=8, encoder_units=6, decoder_units=10, attention_units=6, attentional_units=7,
                      dropout=0.0)
    model = build_model(cfg, 30, 40)
    src = tf.constant([[5, 6, 7, 8, 9, 3], [8, 9, 3, 0, 0, 0], [4, 3, 0, 0, 0, 0]])
    tgt = tf.constant([[2, 10, 11, 12], [2, 13, 14, 15], [2, 16, 0, 0]])
    sampled = tf.constant([1, 5, 7, 20, 33], tf.int64)

    def make(precision):
        @tf.function
        def loss_and_grads(src, tgt):
            with matmul_precision(precision), tf.GradientTape() as tape:
                hidden, _ = model.hidden_and_attention((src, tgt), training=True)
                flat, labels = tf.reshape(hidden, [-1, hidden.shape[-1]]), tf.reshape(tgt, [-1])
                proj = model.projection
                loss = tf.reduce_sum(full_softmax_loss(model.logits(hidden), tgt)) + tf.reduce_sum(
                    sampled_softmax_loss(proj.weights_by_row(), proj.bias, labels, flat, sampled, tf.ones([12]),
                                         tf.ones([5])))
            with matmul_precision(precision):
                return loss, tape.gradient(loss, model.trainable_variables)
        return loss_and_grads

    exact, narrow = make(None), make("bfloat16")
    loss32, grads32 = exact(src, tgt)
    loss16, grads16 = narrow(src, tgt)
    assert [m for m in graph_ops(exact, src, tgt) if m[2] != "float32"] == []
    matmuls = graph_ops(narrow, src, tgt)
    # the context's product (and, without the fused kernel, the scores' [.., U] x [U, 1] before it)
    scope = "decoder_1/attention_1/additive_attention"
    products = ["MatMul"] if fused.kernel() else ["MatMul", "MatMul_1"]
    assert {m[1] for m in matmuls if m[2] == "float32"} == {
        name for p in products for name in (f"{scope}/{p}", f"gradient_tape/{scope}/{p}/MatMul",
                                            f"gradient_tape/{scope}/{p}/MatMul_1")}
    # the recurrent products of 3 GRU loops forward (encoder both ways, decoder) and of their 3 backward loops
    loops = {m[0] for m in matmuls if m[0] != "main" and m[2] == "bfloat16"}
    assert len(loops) == 6
    # one cast to bfloat16 per loop step (the state or its gradient): the kernel was cast before the loop
    casts = [c[0] for c in graph_ops(narrow, src, tgt, kind="Cast", dtype_attr="DstT") if c[2] == "bfloat16"]
    assert sorted(c for c in casts if c in loops) == sorted(loops)
    assert sum(m[2] == "bfloat16" for m in matmuls if m[0] == "main") >= 20
    assert abs(float(loss16) - float(loss32)) < 1e-3 * abs(float(loss32))
    errors = []
    for var, a, b in zip(model.trainable_variables, grads32, grads16):
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
        assert b.dtype == tf.float32, var.path
        errors.append(float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a))))
    # bfloat16 keeps 8 bits of mantissa, about 0.4% per product, and the errors compound along the GRU
    # loops' chains of products: the largest was 3.0% on an AVX2-only CPU (bfloat16 emulated there);
    # a wrong gradient is off by order 100%
    assert 0 < max(errors) < 5e-2, errors


def test_sampled_softmax_equals_tensorflow_with_accidental_hits_removed():
    tf.random.set_seed(1)
    vocab, hidden, n = 50, 8, 12
    weights = tf.random.normal([vocab, hidden])
    biases = tf.random.normal([vocab])
    inputs = tf.random.normal([n, hidden])
    labels = tf.constant(np.arange(n) % 7 + 4, tf.int64)
    sampler = UnigramSampler(np.arange(vocab) + 1, num_sampled=20, distortion=0.75)
    sampled, true_exp, sampled_exp = sampler.sample(labels, tf.constant([3, 4], tf.int64))
    assert bool(tf.reduce_any(tf.equal(labels[:, None], sampled[None, :])))  # the test covers accidental hits
    ours = sampled_softmax_loss(weights, biases, labels, inputs, sampled, true_exp, sampled_exp)
    theirs = tf.nn.sampled_softmax_loss(weights, biases, labels[:, None], inputs, num_sampled=20,
                                        num_classes=vocab, sampled_values=(sampled, true_exp[:, None], sampled_exp),
                                        remove_accidental_hits=True)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
    again = sampler.sample(labels, tf.constant([3, 4], tf.int64))[0]
    np.testing.assert_array_equal(again.numpy(), sampled.numpy())  # stateless: same seed, same draw
    assert int(tf.reduce_min(sampled)) >= 1  # padding is never drawn


def test_merging_repeated_candidates_keeps_the_loss_and_its_gradients():
    """Training folds repeated draws into one column each (expected count / repeats): the same losses and
    gradients as the draws themselves, accidental hits included, from fewer columns."""
    tf.random.set_seed(2)
    vocab, hidden, n = 12, 6, 10
    weights, biases = tf.Variable(tf.random.normal([vocab, hidden])), tf.Variable(tf.random.normal([vocab]))
    inputs = tf.Variable(tf.random.normal([n, hidden]))
    labels = tf.constant(np.arange(n) % 5 + 1, tf.int64)
    sampler = UnigramSampler(np.arange(vocab) ** 2, num_sampled=40, distortion=1.0)
    sampled, true_exp, sampled_exp = sampler.sample(labels, tf.constant([5, 6], tf.int64))
    distinct, distinct_exp = merge_duplicate_candidates(sampled, sampled_exp)
    assert sorted(distinct.numpy()) == sorted(set(sampled.numpy())) and len(distinct) < 20 < len(sampled)
    assert bool(tf.reduce_any(tf.equal(labels[:, None], distinct[None, :])))  # accidental hits covered
    results = []
    for candidates, expected in ((sampled, sampled_exp), (distinct, distinct_exp)):
        with tf.GradientTape() as tape:
            loss = sampled_softmax_loss(weights, biases, labels, inputs, candidates, true_exp, expected)
            total = tf.reduce_sum(loss * tf.range(1.0, n + 1.0))  # weight the rows differently
        grads = tape.gradient(total, [weights, biases, inputs])
        results.append([loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads])
    for draws, merged in zip(*results):
        np.testing.assert_allclose(merged, draws, rtol=1e-5, atol=1e-5)


def test_sampler_draws_by_count_to_the_distortion_power():
    """Candidates are drawn by (count + 1) ** distortion (padding never), the expected counts the loss
    corrects by are num_sampled times those probabilities, and the sampler's expectations of what a step's
    draws hold (each id's inclusion, the distinct count) match real draws."""
    counts = np.array([0, 0, 0, 5000, 3, 99, 899, 8099])
    for distortion in (1.0, 0.5, 0.0):
        want = np.power(counts + 1.0, distortion)
        want[0] = 0.0
        want /= want.sum()
        sampler = UnigramSampler(counts, num_sampled=200_000, distortion=distortion)
        sampled, true_exp, sampled_exp = sampler.sample(tf.constant([4, 7]), tf.constant([1, 2], tf.int64))
        got = np.bincount(sampled.numpy(), minlength=len(counts)) / 200_000
        np.testing.assert_allclose(got, want, atol=0.004, err_msg=str(distortion))
        np.testing.assert_allclose(true_exp.numpy(), 200_000 * want[[4, 7]], rtol=1e-4)
        np.testing.assert_allclose(sampled_exp.numpy()[:50], 200_000 * want[sampled.numpy()[:50]], rtol=1e-4)
        # what a step of 6 draws holds: each id's chance to be among them, and their distinct count (the
        # draws are independent: 2,000 steps of 6 are the first 12,000 of the draws above, 6 at a time)
        sampler = UnigramSampler(counts, num_sampled=6, distortion=distortion)
        draws = sampled.numpy()[:12_000].reshape(2000, 6)
        among = np.mean([np.bincount(d, minlength=len(counts)) > 0 for d in draws], axis=0)
        np.testing.assert_allclose(sampler.inclusion_probabilities(), among, atol=0.03, err_msg=str(distortion))
        assert sampler.expected_distinct() == pytest.approx(np.mean([len(set(d)) for d in draws]), rel=0.02)


def test_full_softmax_loss_and_gradient_match_keras_with_and_without_label_smoothing():
    logits = tf.random.normal([4, 3, 9]) * 3.0
    labels = tf.constant(np.random.default_rng(0).integers(0, 9, [4, 3]), tf.int32)
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    for smoothing, reference in ((0.1, lambda x: keras_loss(tf.one_hot(labels, 9), x)),
                                 (0.0, lambda x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, x))):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            ours, theirs = full_softmax_loss(logits, labels, smoothing), reference(logits)
            weight = tf.reshape(tf.range(12.0), [4, 3])  # a different upstream gradient per position
            weighted_ours, weighted_theirs = tf.reduce_sum(ours * weight), tf.reduce_sum(theirs * weight)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5)
        np.testing.assert_allclose(tape.gradient(weighted_ours, logits).numpy(),
                                   tape.gradient(weighted_theirs, logits).numpy(), rtol=1e-4, atol=1e-6)


def _adam_run(cls, init, grads, rows=((1, 4, 4, 7),)) -> tuple[list[np.ndarray], set[str]]:
    """Variables and slots after ``cls`` applied ``grads`` (the first sparse, on ``rows[step % len(rows)]``),
    and the op types it ran."""
    variables = [keras.Variable(x) for x in init]
    opt = cls(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 1, 0.9), global_clipnorm=1.0)
    opt.build(variables)

    @tf.function
    def apply(dense, rows, values):  # the embedding-like variable gets sparse (IndexedSlices) gradients
        opt.apply([tf.IndexedSlices(values, rows, tf.constant([20, 6])), dense], variables)

    for i, g in enumerate(grads):  # a repeated row: its slices are summed
        apply(tf.constant(g[1]), tf.constant(rows[i % len(rows)]), tf.constant(g[0][:4]))
    rows = tf.constant(rows[0])
    ops = {op.type for op in apply.get_concrete_function(tf.constant(g[1]), rows, tf.constant(g[0][:4]))
           .graph.get_operations()}
    return [v.numpy() for v in variables + opt._momentums + opt._velocities], ops


def test_fused_adam_equals_keras_adam_with_clipping_and_sparse_gradients():
    rng = np.random.default_rng(3)
    init = [rng.normal(size=(20, 6)).astype(np.float32), rng.normal(size=(6,)).astype(np.float32)]
    grads = [[rng.normal(size=(20, 6)).astype(np.float32) * 3.0, rng.normal(size=(6,)).astype(np.float32)]
             for _ in range(4)]
    keras_values, keras_ops = _adam_run(keras.optimizers.Adam, init, grads)
    fused_values, fused_ops = _adam_run(FusedAdam, init, grads)
    assert "ResourceApplyAdam" in fused_ops and "ResourceApplyAdam" not in keras_ops  # the fused kernel runs
    assert not np.allclose(fused_values[0], init[0])  # the variables moved
    for keras_value, fused_value in zip(keras_values, fused_values):
        np.testing.assert_allclose(fused_value, keras_value, rtol=2e-5, atol=1e-7)


def test_lazy_adam_moves_only_touched_rows_with_adams_update():
    rng = np.random.default_rng(4)
    init = [rng.normal(size=(20, 6)).astype(np.float32), rng.normal(size=(6,)).astype(np.float32)]
    grads = [[rng.normal(size=(20, 6)).astype(np.float32) * 3.0, rng.normal(size=(6,)).astype(np.float32)]
             for _ in range(4)]
    rows = ((1, 4, 4, 7), (2, 4, 9, 9))  # rows 1, 7 and 2, 9 are touched every other step
    lazy_values, lazy_ops = _adam_run(LazyAdam, init, grads, rows)
    fused_values, _ = _adam_run(FusedAdam, init, grads, rows)
    assert "ResourceScatterSub" in lazy_ops and "ResourceApplyAdam" in lazy_ops  # sparse and dense paths
    # numpy reference: Adam's formula on the touched rows only, after global-norm clipping
    var, m, v = init[0].astype(np.float64), np.zeros((20, 6)), np.zeros((20, 6))
    for step, g in enumerate(grads, start=1):
        values, dense = g[0][:4].astype(np.float64), g[1].astype(np.float64)
        scale = min(1.0, 1.0 / np.sqrt((values**2).sum() + (dense**2).sum()))
        summed = np.zeros((20, 6))
        np.add.at(summed, list(rows[(step - 1) % 2]), values * scale)
        touched = sorted(set(rows[(step - 1) % 2]))
        m[touched] += (summed[touched] - m[touched]) * 0.1
        v[touched] += (summed[touched] ** 2 - v[touched]) * 0.001
        alpha = 0.05 * 0.9 ** (step - 1) * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        var[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + 1e-7)
    np.testing.assert_allclose(lazy_values[0], var, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(lazy_values[2], m, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(lazy_values[4], v, rtol=2e-5, atol=1e-9)
    untouched = [r for r in range(20) if r not in (1, 2, 4, 7, 9)]
    np.testing.assert_array_equal(lazy_values[0][untouched], init[0][untouched])
    assert not np.allclose(fused_values[0][[1, 2, 7, 9]], lazy_values[0][[1, 2, 7, 9]])  # dense Adam differs
    np.testing.assert_allclose(lazy_values[1], fused_values[1], rtol=1e-6)  # dense gradients: Adam's update
