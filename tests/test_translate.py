"""Translation: line alignment always, batching invariance (parallel batches, input table), bfloat16 matmuls,
greedy = beam 1, EOS stops, attention export."""

from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.dataset import pad_batch
from nmt.decoding import (
    COMPACT_FRACTION,
    Decoder,
    beam_search,
    greedy_decode,
    length_sorted_batches,
    max_output_lengths,
    thread_plan,
    translate_ids,
)
from nmt.model import decoder as decoder_module
from nmt.model import fused
from nmt.translate import Translator, translate_stream
from nmt.vocab import BOS_ID, EOS_ID
from tests.conftest import graph_ops, invoke

SENTENCES = ["I am hungry.", "Where is the big red car that we saw yesterday?", "Thanks.", "He is my friend."]


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator(trained_run)


def test_one_output_line_per_input_line_whatever_the_input(trained_run):
    long_line = " ".join(["word"] * 400)
    data = b"I am hungry.\n\n   \n" + long_line.encode() + b"\ncaf\xe9 au lait\nlast line without newline"
    r = invoke("translate", "--model", str(trained_run), input=data)
    assert r.exit_code == 0, r.output
    out = r.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == 6
    assert out[1] == "" and out[2] == ""
    assert "1 line(s) longer than 250 pieces were truncated" in r.stderr
    assert "1 line(s) had invalid UTF-8" in r.stderr


def test_json_and_n_best_formats(trained_run):
    r = invoke("translate", "--model", str(trained_run), "--json", input="I am hungry.\n\n")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["source"] == "I am hungry." and isinstance(rows[0]["score"], float) and rows[0]["tokens"] >= 1
    assert rows[1] == {"source": "", "translation": "", "score": 0.0, "tokens": 0}
    r = invoke("translate", "--model", str(trained_run), "--beam", "3", "--n-best", "3", input="Thanks.\nHi.\n")
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 6 for line in lines)
    scores = [float(x) for x in lines[0].split("\t")[1::2]]
    assert scores == sorted(scores, reverse=True)
    r = invoke("translate", "--model", str(trained_run), "--beam", "3", "--n-best", "3", "--json", input="Thanks.\n\n")
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # the n-best key on every line, the empty one too
    assert [len(row["n_best"]) for row in rows] == [3, 0]
    assert rows[0]["n_best"][0]["translation"] == rows[0]["translation"]


def test_pieces_output_is_the_models_own_pieces_and_report_time_counts_them(trained_run, translator):
    r = invoke("translate", "--model", str(trained_run), "--pieces", "--report-time", input="I am hungry.\n\n")
    lines = r.stdout.split("\n")
    assert len(lines) == 3 and lines[1] == "" and lines[2] == ""  # the report goes to stderr only
    expected = translator.translate(["I am hungry."])[0]
    assert lines[0].split(" ") == translator.tgt_vocab.pieces(expected.target_ids)
    assert translator.tgt_vocab.sp.decode_pieces(lines[0].split(" ")) == expected.text
    report = re.fullmatch(r"translated 2 lines \((\d+) target pieces\) in ([\d.]+) s: [\d.,]+ lines/s, [\d,]+ "
                          r"pieces/s; TensorFlow and the model loaded in ([\d.]+) s", r.stderr.strip())
    assert report, r.stderr
    assert int(report[1]) == len(lines[0].split(" ")) and float(report[2]) > 0 and float(report[3]) > 0


def test_sentence_alone_equals_sentence_in_a_batch(translator):
    """Greedy and beam search alike: a sentence's outputs do not depend on the sentences decoded with it
    (beam search stops each sentence when it is done, not when the batch is)."""
    for beam, n_best in ((1, 1), (3, 3)):
        alone = [translator.translate([s], beam=beam, n_best=n_best)[0].n_best for s in SENTENCES]
        batched = [t.n_best for t in translator.translate(SENTENCES * 3, beam=beam, n_best=n_best)]
        assert [[text for text, _ in n] for n in batched] == [[text for text, _ in n] for n in alone] * 3
        if beam > 1:
            np.testing.assert_allclose([[score for _, score in n] for n in batched],
                                       [[score for _, score in n] for n in alone] * 3, atol=1e-5)


def test_n_best_lists_hold_only_the_outputs_the_limit_allows(translator):
    """An output limit of 1 allows one output, EOS alone: beam 3's 3-best list holds that one, not two
    filler hypotheses scored -1e9; a limit of 2 allows more than 3, all with real scores."""
    ids = translator.src_vocab.encode(SENTENCES)
    for limit, expected in ((1, 1), (2, 3)):
        cfg = dataclasses.replace(translator.decoding, max_length_a=0.0, max_length_b=limit, max_length_cap=limit)
        results = translate_ids(Decoder(translator.model, cfg), ids, 4, beam=3, n_best=3)
        assert [len(r) for r in results] == [expected] * len(SENTENCES)
        assert all(-1e3 < h[1] < 0 and len(h[0]) < limit for r in results for h in r)


def test_batches_decoded_at_once_give_the_same_translations_in_input_order(trained_run, translator):
    ids = translator.src_vocab.encode(SENTENCES * 3)  # 12 sentences: 6 batches of 2, 3 at a time
    # longest first, so the batches decoded side by side end together; the partial batch is the shortest
    layout = length_sorted_batches([3, 7, 1, 7, 5, 2, 4], 3)
    assert [rows.tolist() for rows in layout] == [[1, 3, 4], [6, 0, 5], [2]]
    one_by_one = Decoder(translator.model, dataclasses.replace(translator.decoding, parallel_batches=1))
    # also with the input projections made once (frozen_weights, what a Translator uses)
    three_at_once = Decoder(translator.model, dataclasses.replace(translator.decoding, parallel_batches=3),
                            frozen_weights=True)
    assert (one_by_one.parallel_batches, three_at_once.parallel_batches) == (1, 3)
    assert one_by_one.frozen is None
    assert three_at_once.frozen.step["input_table"].shape[0] == len(translator.tgt_vocab)
    for beam in (1, 3):
        expected = translate_ids(one_by_one, ids, 2, beam=beam, n_best=beam)
        got = translate_ids(three_at_once, ids, 2, beam=beam, n_best=beam)
        assert [[h[0] for h in r] for r in got] == [[h[0] for h in r] for r in expected]
        np.testing.assert_allclose([h[1] for r in got for h in r], [h[1] for r in expected for h in r], atol=1e-4)
    outputs = [invoke("translate", "--model", str(trained_run), "--batch-size", "2", "--parallel-batches", n,
                      input="\n".join(SENTENCES * 3) + "\n").stdout for n in ("1", "3")]
    assert outputs[0] == outputs[1] and outputs[0].splitlines()[:4] == [t.text for t in translator.translate(SENTENCES)]
    for option in ("--parallel-batches", "--cpu-threads"):  # out of range: one usage line, exit 2, no output
        r = invoke("translate", "--model", str(trained_run), option, "0", input="Thanks.\n")
        assert r.exit_code == 2 and r.stdout == "" and f"Invalid value for '{option}'" in r.stderr


def _padded(sentences: list[list[int]], prefix: int | None = None, suffix: int | None = None) -> tf.Tensor:
    """Id lists as one padded batch, through the data pipeline's :func:`nmt.dataset.pad_batch`."""
    offsets = np.cumsum([0] + [len(s) for s in sentences])
    width = max(map(len, sentences)) + (prefix is not None) + (suffix is not None)
    return tf.constant(pad_batch(np.concatenate(sentences), offsets, np.arange(len(sentences)), width, prefix, suffix))


def test_bfloat16_decoding_multiplies_bfloat16_copies_and_translates_like_float32(trained_run, translator,
                                                                                  monkeypatch):
    """decoding.precision bfloat16: the step's, the encoder GRUs' and the output projection's kernels are
    bfloat16 copies made at load, and the compiled decoders multiply them in bfloat16 (Keras' layer calls
    would cast them back to float32); the rest stays float32; translations stay those of float32 or close
    to them, line for line. (Without the transposed copies some CPUs add, whose products the step picks by
    its rows: tests/test_model.py checks those in bfloat16 too.)"""
    monkeypatch.setattr(decoder_module, "weights_first_faster", lambda: False)  # the same graphs on every CPU
    bf16 = Translator(trained_run, precision="bfloat16", shortlist=False)
    translator32 = Translator(trained_run, shortlist=False)
    frozen = bf16.decoder.frozen
    assert frozen.step["recurrent_kernel"].dtype == frozen.step["attentional_kernel"].dtype == tf.bfloat16
    assert frozen.step["recurrent_bias"].dtype == tf.float32 and frozen.step["input_table"].dtype == tf.float32
    kernel, recurrent_kernel, bias = frozen.encoder["bigru_0_backward"]  # the encoder's GRUs too
    assert (kernel.dtype, recurrent_kernel.dtype, bias.dtype) == (tf.bfloat16, tf.bfloat16, tf.float32)
    assert frozen.projection.dtype == tf.bfloat16
    assert translator.decoder.frozen.encoder is None and translator.decoder.frozen.projection is None
    for shortlisted in (False, True):
        for beam in (1, 3):
            matmuls = graph_ops(bf16.decoder._fn(beam, False, shortlisted, True, 1))
            float32 = [m for m in matmuls if m[2] == "float32"]
            # the bridge and the keys, once per batch, and the decoding loop's attention context (and its
            # scores, without the fused kernel)
            assert len(float32) == (3 if fused.kernel() else 4) and sum(m[0] == "main" for m in float32) == 2, float32
            loop = float32[-1][0]
            # that loop's other products: the GRU's recurrent one, the query, the attentional layer, the projection
            assert sum(m[0] == loop and m[2] == "bfloat16" for m in matmuls) == 4, matmuls
            # the encoder's input projections (main) and recurrent products (one loop a direction)
            assert sum(m[0] == "main" and m[2] == "bfloat16" for m in matmuls) == 2, matmuls
            assert len({m[0] for m in matmuls if m[0] not in ("main", loop) and m[2] == "bfloat16"}) == 2, matmuls
            float32_graph = graph_ops(translator32.decoder._fn(beam, False, shortlisted, True, 1))
            assert len(float32_graph) == len(matmuls) and {m[2] for m in float32_graph} == {"float32"}
    # the log-probabilities of float32's translations, step by step, from the copies and from the variables
    src = _padded(bf16.src_vocab.encode(SENTENCES), suffix=EOS_ID)
    tgt = _padded([t.target_ids for t in translator.translate(SENTENCES)], prefix=BOS_ID)
    log_probs = {}
    for name, weights in (("bfloat16", frozen), ("float32", None)):
        memory, keys, mask, state = bf16.model.encode(src, frozen_encoder=weights and weights.encoder)
        by_column = bf16.model.projection.weights_by_column(rows=weights and weights.projection)
        steps = []
        for t in range(tgt.shape[1]):
            hidden, state, _ = bf16.model.decoder.step(tgt[:, t], state, memory, keys, mask, weights and weights.step)
            steps.append(tf.nn.log_softmax(bf16.model.logits(hidden, by_column)))
        log_probs[name] = tf.stack(steps, 1).numpy()
    error = np.abs(log_probs["bfloat16"] - log_probs["float32"]).max()
    # bfloat16 products (8-bit mantissas): about 0.2% of the largest log-probability for this model
    assert 1e-4 < error < 1e-2 * np.abs(log_probs["float32"]).max(), error
    r = invoke("translate", "--model", str(trained_run), "--precision", "bfloat16", "--shortlist", "--beam", "3",
               input="I am hungry.\n\nThanks.\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 3 and r.stdout.split("\n")[1] == ""  # one line per input line
    for command in (["translate", "--model", str(trained_run)], ["eval", "--hyp", "h.txt", "--ref", "r.txt"]):
        r = invoke(*command, "--precision", "float16", input="Thanks.\n")
        assert r.exit_code == 2 and r.stdout == "" and "Invalid value for '--precision'" in r.stderr


def test_thread_plan_shares_the_cpu_threads_among_parallel_batches():
    from nmt.config import DecodingConfig

    assert thread_plan(DecodingConfig(), cores=2, on_gpu=False) == (4, 1)   # two batches per core
    assert thread_plan(DecodingConfig(), cores=1, on_gpu=False) == (2, 1)
    assert thread_plan(DecodingConfig(), cores=16, on_gpu=False) == (4, 4)  # at most 4 batches
    assert thread_plan(DecodingConfig(cpu_threads=6, parallel_batches=2), cores=16, on_gpu=False) == (2, 3)
    assert thread_plan(DecodingConfig(parallel_batches=8), cores=2, on_gpu=False) == (8, 1)
    assert thread_plan(DecodingConfig(parallel_batches=3), cores=16, on_gpu=True) == (1, 0)


def test_beam_of_one_is_greedy(translator):
    src_ids = translator.src_vocab.encode(SENTENCES)
    width = max(map(len, src_ids)) + 1
    src = np.zeros((len(src_ids), width), np.int32)
    for i, ids in enumerate(src_ids):
        src[i, :len(ids) + 1] = ids + [EOS_ID]
    lengths = max_output_lengths(tf.constant([len(s) for s in src_ids]), translator.decoding)
    g_tokens, g_len, g_scores, _ = tf.function(lambda s, m: greedy_decode(translator.model, s, m))(src, lengths)
    b_tokens, b_len, b_scores, _ = tf.function(
        lambda s, m: beam_search(translator.model, s, m, beam_size=1, length_penalty=0.0))(src, lengths)
    np.testing.assert_array_equal(g_tokens.numpy(), b_tokens.numpy()[:, 0])
    np.testing.assert_array_equal(g_len.numpy(), b_len.numpy()[:, 0])
    np.testing.assert_allclose(g_scores.numpy(), b_scores.numpy()[:, 0], rtol=1e-5)
    greedy = [t.text for t in translator.translate(SENTENCES, beam=1)]
    assert [t.text for t in translator.translate(SENTENCES, beam=5)] != [] and len(greedy) == len(SENTENCES)


def test_ended_sentences_are_gathered_out_of_the_batch_without_changing_any_output(translator):
    """Output limits of 2..9 end the sentences one step after another, so both searches gather the ended
    ones out of their batch (the first by step 3, then again); with the gathering switched off
    (``compact_fraction`` above 1) every output is the same. Beam search with ``n_best`` 3 goes on with a
    sentence until 3 hypotheses have ended: all 3 end with EOS, ranked by score."""
    src = _padded(translator.src_vocab.encode(SENTENCES * 2), suffix=EOS_ID)
    limits = tf.range(2, 10)

    def run(beam: int, compact_fraction: float) -> list[np.ndarray]:  # [B, K, T], [B, K], [B, K], [B, K, T, S]
        if beam == 1:
            out = tf.function(lambda s, m: greedy_decode(translator.model, s, m, with_attention=True,
                                                         compact_fraction=compact_fraction))(src, limits)
            return [x.numpy()[:, None] for x in out]
        out = tf.function(lambda s, m: beam_search(translator.model, s, m, beam, 1.0, with_attention=True,
                                                   n_best=beam, compact_fraction=compact_fraction))(src, limits)
        return [x.numpy() for x in out]

    for beam in (1, 3):
        tokens, lengths, scores, attention = run(beam, COMPACT_FRACTION)
        whole = run(beam, 2.0)
        assert all(lengths[:, 0] <= np.arange(2, 10)) and tokens.shape[2] > 3  # EOS by the limits
        np.testing.assert_array_equal(tokens, whole[0])
        np.testing.assert_array_equal(lengths, whole[1])
        np.testing.assert_allclose(scores, whole[2], atol=1e-5)
        assert not attention[0, :, 3:].any() and whole[3][0, :, 3:].any()  # sentence 0 gathered out by step 3
        for (i, j), n in np.ndenumerate(lengths):  # the weights of each output token and EOS
            np.testing.assert_allclose(attention[i, j, :n], whole[3][i, j, :n], atol=1e-6)
        assert (tokens == EOS_ID).any(-1).all()  # beam search: all 3 hypotheses of every sentence ended
        assert (np.diff(scores, axis=1) <= 0).all()


def test_eos_stops_decoding_early(trained_run):
    t = Translator(trained_run)
    bias = t.model.projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[EOS_ID]], [100.0]))  # EOS always wins
    src = np.array([[10, 11, 12, EOS_ID]], np.int32)
    for beam in (1, 3):
        hyp = t.decoder.decode(src, np.array([3]), beam=beam)
        assert hyp.tokens.shape[-1] == 1 and hyp.tokens[0, 0, 0] == EOS_ID and hyp.lengths[0, 0] == 1
    # decoding.min_length blocks EOS for that many steps, even when EOS is the model's only choice
    at_least_four = Decoder(t.model, dataclasses.replace(t.decoding, min_length=4))
    for beam in (1, 3):
        for with_scores in (True, False):
            hyp = at_least_four.decode(src, np.array([3]), beam=beam, with_scores=with_scores)
            assert hyp.lengths[0, 0] == 5 and hyp.tokens[0, 0, 4] == EOS_ID and EOS_ID not in hyp.tokens[0, 0, :4]


def test_greedy_without_scores_gives_the_same_translations(translator):
    """with_scores=False (nmt translate's text output, eval, validation) skips greedy decoding's softmax
    normaliser: the same tokens, scores None; beam search scores anyway."""
    scored, unscored = translator.translate(SENTENCES + [""]), translator.translate(SENTENCES + [""], with_scores=False)
    assert [t.target_ids for t in unscored] == [t.target_ids for t in scored] and unscored[-1].text == ""
    assert all(t.score is None for t in unscored) and all(isinstance(t.score, float) for t in scored)
    assert all(t.score < 0 for t in scored[:-1])  # sums of log-probabilities
    beam = translator.translate(SENTENCES, beam=3, with_scores=False)
    assert all(isinstance(t.score, float) for t in beam)


def test_attention_matrix_and_heatmap(trained_run, tmp_path):
    r = invoke("translate", "--model", str(trained_run), "--attention-dir", str(tmp_path), "--attention-max", "2",
               input="I am hungry.\n\nThanks.\nNot exported.\n")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "attention.jsonl").read_text().splitlines()]
    assert [row["line"] for row in rows] == [1]  # line 2 is empty; lines 3-4 are past --attention-max 2
    w = np.array(rows[0]["weights"])
    assert w.shape == (len(rows[0]["target_pieces"]), len(rows[0]["source_pieces"]))
    assert rows[0]["source_pieces"][-1] == "</s>" and rows[0]["target_pieces"][-1] == "</s>"
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-3)
    png = tmp_path / "line-000001.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3


def test_bad_model_directory_errors(tmp_path, trained_run):
    r = invoke("translate", "--model", str(tmp_path), input="hi\n")
    assert r.exit_code == 2 and "not a run directory" in r.stderr
    r = invoke("translate", "--model", str(trained_run), "--checkpoint", str(tmp_path / "nope"), input="hi\n")
    assert r.exit_code == 2 and "no such checkpoint" in r.stderr


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60), max_size=12),
                 st.binary(max_size=300)))
def test_property_one_line_out_per_line_in(translator, data):
    raw = data if isinstance(data, bytes) else "\n".join(data).encode("utf-8", "surrogatepass")
    expected = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)
    sink = io.StringIO()
    stats = translate_stream(translator, io.BytesIO(raw), sink, chunk_lines=5)
    assert stats.lines == expected
    assert sink.getvalue().count("\n") == expected
