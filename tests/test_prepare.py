"""``nmt prepare``: cleaning, splitting, encoding, manifest, determinism, atomicity and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nmt.dataset import PreparedData
from nmt.normalize import normalize
from tests.conftest import invoke, tiny_config, write_config


def test_normalisation_cleans_the_corpora_oddities():
    # no-break and narrow no-break spaces, thin space, zero-width space, soft hyphen, BOM, tab, NUL, CR
    raw = "\ufeffJe\u00a0suis\u202f! a\u2009b\u200bc co\u00adop\tx\x00y\r  z  "
    assert normalize(raw) == "Je suis ! a bc coop x y z"
    assert normalize("ﬁn Ｔｅｓｔ") == "fin Test"  # NFKC
    assert normalize("Ab", lowercase=True) == "ab"


def test_prepare_tsv_end_to_end(prepared: Path):
    manifest = json.loads((prepared / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == 800
    assert counts["kept"]["dev"] == 40 and counts["kept"]["test"] == 40
    assert counts["kept"]["train"] == 800 - 80 - sum(counts["dropped"].values())
    assert manifest["vocab"]["pad_id"] == 0 and manifest["vocab"]["eos_id"] == 3
    assert len(manifest["tgt_unigram_counts"]) == manifest["vocab"]["tgt_size"]
    assert manifest["inputs"]["train"][0]["sha256"]
    data = PreparedData(prepared)
    train = data.split("train")
    assert len(train) == counts["kept"]["train"]
    assert sum(manifest["tgt_unigram_counts"]) == len(train.tgt_ids) + len(train)  # pieces + one EOS each
    # ids decode back to the normalised held-out text
    src_vocab, _ = data.vocabs()
    dev = data.split("dev")
    first = dev.src_ids[dev.src_offsets[0]:dev.src_offsets[1]].astype(int).tolist()
    assert src_vocab.decode([first])[0] == data.text("dev", "src")[0]
    # no held-out pair is also in train
    held = set(zip(data.text("dev", "src"), data.text("dev", "tgt")))
    assert len(held) > 30


def test_two_files_with_explicit_dev_and_test(tmp_path):
    src = [f"sentence number {i} ." for i in range(300)]
    tgt = [f"phrase numéro {i} ." for i in range(300)]
    (tmp_path / "a.en").write_text("\n".join(src[:200]) + "\n")
    (tmp_path / "a.fr").write_text("\n".join(tgt[:200]) + "\n")
    (tmp_path / "d.en").write_text("\n".join(src[200:250] + [src[0]]) + "\n")  # src[0] also in train
    (tmp_path / "d.fr").write_text("\n".join(tgt[200:250] + [tgt[0]]) + "\n")
    r = invoke("prepare", "--src", str(tmp_path / "a.en"), "--tgt", str(tmp_path / "a.fr"),
               "--dev-src", str(tmp_path / "d.en"), "--dev-tgt", str(tmp_path / "d.fr"),
               "--set", "data.test_size=20", "--vocab-size", "100", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["kept"] == {"train": 179, "dev": 51, "test": 20}
    assert m["counts"]["dropped"]["in_dev_or_test"] == 1
    assert "kept: train" in r.output and "dropped: duplicate" in r.output


def test_prepare_is_deterministic(corpus_dir, tmp_path):
    outs = []
    for name in ("one", "two"):
        cfg = tiny_config(corpus_dir, data={"prepared_dir": str(tmp_path / name)})
        assert invoke("prepare", "--config", str(write_config(tmp_path / f"{name}.yaml", cfg))).exit_code == 0
        outs.append(tmp_path / name)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_interrupted_prepare_leaves_nothing(corpus_dir, tmp_path, monkeypatch):
    import nmt.prepare

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nmt.prepare, "train_sentencepiece", boom)
    cfg = tiny_config(corpus_dir, data={"prepared_dir": str(tmp_path / "out")})
    with pytest.raises(KeyboardInterrupt):
        nmt.prepare.prepare(nmt.config.config_from_dict(cfg), log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def pair_files(tmp_path):
    def make(src: bytes, tgt: bytes) -> tuple[Path, Path]:
        (tmp_path / "s.txt").write_bytes(src)
        (tmp_path / "t.txt").write_bytes(tgt)
        return tmp_path / "s.txt", tmp_path / "t.txt"

    return make


def run_pairs(tmp_path, s, t, *extra):
    return invoke("prepare", "--src", str(s), "--tgt", str(t), "--out", str(tmp_path / "out"),
                  "--set", "data.dev_size=2", "--set", "data.test_size=2", "--vocab-size", "40", *extra)


def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, pair_files):
    good = b"".join(b"hello world %d\n" % i for i in range(30))
    assert_one_line_error(run_pairs(tmp_path, tmp_path / "missing.txt", tmp_path / "m2.txt"), 2,
                          "missing.txt: file not found")
    s, t = pair_files(good, good + b"extra\n")
    assert_one_line_error(run_pairs(tmp_path, s, t), 2, "line counts differ", "s.txt has 30 lines",
                          "t.txt has 31")
    s, t = pair_files(good, good.replace(b"world 7", b"w\xffrld 7"))
    assert_one_line_error(run_pairs(tmp_path, s, t), 2, "t.txt:8: invalid UTF-8", "--on-invalid-utf8")
    s, t = pair_files(b"\n" * 30, good)
    assert_one_line_error(run_pairs(tmp_path, s, t), 2, "no training pairs left")
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"a\tb\n" * 5 + b"only one column\n" + b"c\td\n" * 20)
    r = invoke("prepare", "--tsv", str(tsv), "--out", str(tmp_path / "out"), "--set", "data.dev_size=2",
               "--set", "data.test_size=2")
    assert_one_line_error(r, 2, "c.tsv:6: 1 tab-separated column(s)")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_invalid_utf8_skip_and_replace_are_counted(tmp_path, pair_files):
    good = b"".join(b"hello world %d\n" % i for i in range(30))
    s, t = pair_files(good, good.replace(b"world 7", b"w\xffrld 7"))
    r = run_pairs(tmp_path, s, t, "--on-invalid-utf8", "skip")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["dropped"]["invalid_utf8"] == 1
    r = run_pairs(tmp_path, s, t, "--on-invalid-utf8", "replace", "--overwrite")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["line_repairs"]["invalid_utf8"] == 1 and m["counts"]["dropped"]["invalid_utf8"] == 0


def test_existing_output_is_refused_without_overwrite(prepared):
    r = invoke("prepare", "--tsv", str(prepared.parent / "tiny.tsv"), "--out", str(prepared))
    assert_one_line_error(r, 2, "already exists", "--overwrite")


def test_crlf_bom_and_gzip_input(tmp_path):
    import gzip

    body = "\ufeff" + "".join(f"Line {i}\u00a0here\tLigne {i}\r\n" for i in range(40))
    with gzip.open(tmp_path / "c.tsv.gz", "wt", encoding="utf-8", newline="") as f:
        f.write(body)
    r = invoke("prepare", "--tsv", str(tmp_path / "c.tsv.gz"), "--out", str(tmp_path / "out"),
               "--set", "data.dev_size=3", "--set", "data.test_size=3", "--vocab-size", "60")
    assert r.exit_code == 0, r.output
    data = PreparedData(tmp_path / "out")
    text = data.text("dev", "src") + data.text("dev", "tgt")
    assert all(line.isprintable() and "\r" not in line and "\ufeff" not in line for line in text)
    assert all(np.all(np.asarray(data.split("train").src_ids) > 0) for _ in [0])
