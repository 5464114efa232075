"""Lexical shortlists: the association table, decoding restricted to it, the CLI and its errors."""

from __future__ import annotations

import shutil

import numpy as np
import yaml

from nmt.dataset import Split
from nmt.decoding import Decoder
from nmt.shortlist import Shortlist, build_shortlist
from nmt.translate import Translator
from tests.conftest import invoke

SENTENCES = ["I am hungry.", "Where is the big red car that we saw yesterday?", "Thanks.", "He is my friend."]


def _split(src: list[list[int]], tgt: list[list[int]]) -> Split:
    def flat(rows):
        return np.array([i for r in rows for i in r], np.uint16), np.cumsum([0] + [len(r) for r in rows])
    (si, so), (ti, to) = flat(src), flat(tgt)
    return Split(si, so, ti, to)


def test_dice_table_ranks_the_translations_first_and_keeps_the_special_ids_in_place():
    # source 4 always comes with target 10, source 5 with 11; target 12 is everywhere (frequent, weakly associated)
    split = _split([[4, 5], [4], [4, 6], [5], [6]], [[10, 11, 12], [10, 12], [10, 13, 12], [11, 12], [13, 12]])
    sl = build_shortlist(split, src_vocab_size=8, tgt_vocab_size=16, per_source=2, frequent=1)
    assert sl.candidates[4].tolist() == [10, 12]  # Dice 1.0, then 2*3/(3+5)
    assert sl.candidates[5].tolist() == [11, 12] and sl.candidates[6].tolist() == [13, 12]
    assert sl.candidates[7].tolist() == [-1, -1]  # never seen
    assert sl.frequent.tolist() == [12]
    targets = sl.targets(np.array([[5, 3, 0]]))  # a padded batch row: source 5, EOS, PAD
    assert targets.tolist() == [0, 1, 2, 3, 11, 12]  # PAD, UNK, BOS, EOS keep their ids as positions


def test_decoding_over_a_shortlist(trained_run):
    full = Translator(trained_run)
    vocab = len(full.tgt_vocab)
    # A shortlist that allows every piece decodes exactly as the whole vocabulary does.
    everything = Translator(trained_run, shortlist=True, shortlist_per_source=vocab, shortlist_frequent=vocab)
    for beam in (1, 3):
        a, b = full.translate(SENTENCES, beam=beam), everything.translate(SENTENCES, beam=beam)
        assert [t.target_ids for t in a] == [t.target_ids for t in b]
        np.testing.assert_allclose([t.score for t in a], [t.score for t in b], atol=1e-4)
    # A shortlist of the 40 rarest pieces decodes as the whole vocabulary does when every other
    # piece's logit is -inf (the bias of a second copy of the model masked), scores included. The
    # special pieces, which the shortlist always keeps, are masked in both: no EOS, so every output
    # runs to the length limit in pieces of the shortlist.
    rare = np.arange(vocab - 40, vocab, dtype=np.int32)
    shortlist = Shortlist(np.tile(rare, (len(full.src_vocab), 1)), np.zeros(0, np.int32))
    listed = Translator(trained_run)
    listed.decoder = Decoder(listed.model, listed.decoding, shortlist)
    allowed = np.zeros(vocab, bool)
    allowed[rare] = True
    for model in (full.model, listed.model):
        model.projection.bias.assign(np.where(allowed, model.projection.bias.numpy(), -1e9))
    for beam in (1, 3):
        a, b = full.translate(SENTENCES, beam=beam), listed.translate(SENTENCES, beam=beam)
        assert all(len(t.target_ids) > 5 and set(t.target_ids) <= set(rare.tolist()) for t in b)
        assert [t.target_ids for t in a] == [t.target_ids for t in b]
        np.testing.assert_allclose([t.score for t in a], [t.score for t in b], rtol=1e-5)
    # The table built from the training data: a short sentence gets a small part of the vocabulary.
    built = Translator(trained_run, shortlist=True, shortlist_per_source=2, shortlist_frequent=3).decoder.shortlist
    assert 4 < len(built.targets(np.array(full.src_vocab.encode(SENTENCES[:1])))) < vocab // 4


def test_cli_builds_the_shortlist_once_and_errors_cleanly(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    r = invoke("translate", "--model", str(run), "--shortlist", input="I am hungry.\n\nThanks.\n")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.split("\n")) == 4 and r.stdout.split("\n")[1] == ""
    saved = run / "shortlist_10_100.npz"
    assert saved.is_file() and not list(run.glob(".shortlist*tmp*"))
    assert Shortlist.load(saved).candidates.shape[1] == 10
    (tmp_path / "src.txt").write_text("I am hungry.\nThanks.\n")
    (tmp_path / "ref.txt").write_text("J'ai faim.\nMerci.\n")
    r = invoke("eval", "--model", str(run), "--src", str(tmp_path / "src.txt"), "--ref", str(tmp_path / "ref.txt"),
               "--shortlist", "--json")
    assert r.exit_code == 0, r.output
    # A run whose prepared data is gone, and no saved shortlist: one clear line, exit 2 (bad input).
    saved.unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["prepared_dir"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = invoke("translate", "--model", str(run), "--shortlist", input="Thanks.\n")
    assert r.exit_code == 2 and "shortlist_10_100.npz: missing" in r.stderr and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1
    r = invoke("translate", "--model", str(run), input="Thanks.\n")  # without a shortlist the run still works
    assert r.exit_code == 0 and r.stdout.count("\n") == 1


def test_bad_shortlist_files_and_foreign_prepared_data_give_one_line_errors(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    saved = run / "shortlist_10_100.npz"

    def fails_with(message: str) -> None:
        r = invoke("translate", "--model", str(run), "--shortlist", input="Thanks.\n")
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.output
        assert "Traceback" not in r.output and r.stdout == ""

    saved.write_bytes(b"not a numpy archive")
    fails_with("shortlist_10_100.npz: unreadable shortlist")
    Shortlist(np.zeros((8, 3), np.int32), np.zeros(0, np.int32)).save(saved)  # 3 per source, not 10
    fails_with("shortlist_10_100.npz: a shortlist of other settings")
    saved.unlink()
    manifest = run / "manifest.json"
    text = manifest.read_text()
    digest = text.split('"train/tgt.ids": "')[1][:64]
    manifest.write_text(text.replace(digest, "0" * 64))  # the run now says it was trained on other data
    fails_with("not the prepared data this run was trained on")
    assert not saved.exists()
