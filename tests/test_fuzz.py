"""Fuzzing the inputs users write by hand: config YAML and corpus files.

Every generated input must give a valid result or one clean error (an ``InputError``
naming the file), never another exception.
"""

from __future__ import annotations

import dataclasses
import os
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.config import Config, load_config
from nmt.errors import InputError
from nmt.fileio import LineCounts, read_lines

# scripts/stress.py runs these with many more examples (NMT_FUZZ_EXAMPLES)
FUZZ = settings(max_examples=int(os.environ.get("NMT_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sections() -> dict[str, list[str]]:
    out = {}
    for f in dataclasses.fields(Config):
        out[f.name] = [g.name for g in dataclasses.fields(typing.get_type_hints(Config)[f.name])]
    return out


SECTIONS = _sections()
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["post", "feed", "unigram", "bpe", "auto", "on", "off", "tokens", "plateau", "1e-3", "0x10"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), SCALARS, max_size=2))
KEYS = st.one_of(st.sampled_from([k for keys in SECTIONS.values() for k in keys]), st.text(max_size=12))


@st.composite
def config_documents(draw) -> object:
    """A YAML-able document near a real config: real and random sections, keys and values."""
    doc: dict = {}
    for name in draw(st.lists(st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=8)), max_size=5)):
        if draw(st.integers(0, 9)) == 0:
            doc[name] = draw(VALUES)  # a section that is not a mapping
            continue
        keys = st.one_of(st.sampled_from(SECTIONS.get(name, ["x"])), KEYS)
        doc[name] = draw(st.dictionaries(keys, VALUES, max_size=4))
    return doc if draw(st.integers(0, 19)) else draw(VALUES)


def check_one_clean_outcome(path) -> None:
    try:
        cfg = load_config(path)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message and len(message) < 400, message
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(doc=config_documents())
def test_config_documents_give_a_config_or_one_clean_error(doc, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    check_one_clean_outcome(path)


EVIL = [
    "model: !!python/object/apply:os.system ['echo pwned']\n",
    "model: !!python/name:os.system\n",
    "training: !!python/object/new:dict {}\n",
    "data: !custom {a: 1}\n",
    "model: {dropout: &a [*a]}\n",                                        # a recursive value
    "model: {dropout: [&a [1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b],"
    " &d [*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e]]}\n",  # alias bomb
    "training:\n  max_steps: " + "9" * 5000 + "\n",                      # more digits than int() takes
    "[" * 5000 + "]" * 5000 + "\n",                                      # nesting deeper than the parser goes
    "training: {seed: -1}\n", "model: {embedding_dim: 100000000}\n", "decoding: {max_length_a: 1.0e+308}\n",
    "training: {learning_rate: .nan}\n", "training: {max_minutes: .inf}\n", "model:\n  dropout: 0.1\n model: 3\n",
    "\ufeffmodel: {dropout: 0.1}\n", "\x00\x01", "--- a\n--- b\n", "",
]


def test_hand_written_hostile_documents(tmp_path):
    for i, text in enumerate(EVIL):
        path = tmp_path / f"evil{i}.yaml"
        path.write_text(text, encoding="utf-8")
        check_one_clean_outcome(path)
    # and the Python-object tags never construct anything
    for text in EVIL[:3]:
        (tmp_path / "t.yaml").write_text(text, encoding="utf-8")
        try:
            load_config(tmp_path / "t.yaml")
        except InputError as exc:
            assert "invalid YAML" in str(exc)
        else:
            raise AssertionError(f"accepted: {text!r}")


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_a_config_file(text, tmp_path):
    path = tmp_path / "text.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_one_clean_outcome(path)


# --------------------------------------------------------------------------- corpus lines
LINE_BYTES = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"\r\n", b"\r", b"\n", b"\x00", b"\xef\xbb\xbf", b"caf\xc3\xa9", b"\xff\xfe", b"\t", b"a" * 300])), max_size=30)


@FUZZ
@given(parts=LINE_BYTES, policy=st.sampled_from(["skip", "replace", "error"]))
def test_read_lines_keeps_line_numbers_and_counts_every_oddity(parts, policy, tmp_path):
    raw = b"".join(parts)
    path = tmp_path / "fuzz.txt"
    path.write_bytes(raw)
    expected = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0)
    counts = LineCounts()
    try:
        lines = list(read_lines(path, policy, counts=counts, max_bytes=200))
    except InputError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message
        assert (policy == "error" and "invalid UTF-8" in message) or "CR alone" in message, message
        return
    assert [line.number for line in lines] == list(range(1, expected + 1))
    for line in lines:
        assert "\n" not in line.text and "\x00" not in line.text and "\r" not in line.text
        assert line.skipped in ("", "overlong", "invalid_utf8") and (line.skipped != "invalid_utf8" or policy == "skip")
    assert counts.overlong == sum(1 for line in raw.split(b"\n") if len(line.rstrip(b"\r")) > 200)
    assert counts.nul == sum(1 for line in raw.split(b"\n") if b"\x00" in line and len(line.rstrip(b"\r")) <= 200)


def test_prepare_on_a_hostile_corpus_counts_every_repair(tmp_path):
    import json
    import random

    from tests.conftest import invoke

    rng = random.Random(7)
    lines = [b"line %d here\tligne %d ici" % (i, i) for i in range(60)]
    lines[0] = b"\xef\xbb\xbf" + lines[0]                  # a byte-order mark
    lines[5] += b"\r"                                      # a CRLF line among LF lines
    lines[9] = b"bare\rcr %d\tnu\x00l" % 9                 # a bare CR and a NUL byte
    lines[12] = bytes(rng.randrange(256) for _ in range(80)).replace(b"\n", b"")  # random bytes
    lines[20] = b"x" * (1 << 20) + b"\ty"                  # a line over the 1 MiB limit
    (tmp_path / "c.tsv").write_bytes(b"\n".join(lines) + b"\n")
    r = invoke("prepare", "--tsv", str(tmp_path / "c.tsv"), "--out", str(tmp_path / "out"), "--vocab-size", "60",
               "--set", "data.dev_size=3", "--set", "data.test_size=3", "--on-invalid-utf8", "skip")
    assert r.exit_code == 0, r.output
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["line_repairs"] == {"bare_cr": 1, "nul": 1, "bom": 1, "invalid_utf8": 1, "overlong": 1}
    assert counts["dropped"]["overlong"] == 1 and counts["dropped"]["invalid_utf8"] == 1
    assert "lines with a bare CR (read as a space)" in r.output and "byte-order marks dropped" in r.output
    # random bytes under the default policy: one error naming the file and line, nothing written
    r = invoke("prepare", "--tsv", str(tmp_path / "c.tsv"), "--out", str(tmp_path / "out2"), "--vocab-size", "60",
               "--set", "data.dev_size=3", "--set", "data.test_size=3")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert r.stderr.startswith(f"error: {tmp_path / 'c.tsv'}:13: invalid UTF-8 at byte "), r.stderr
    assert not (tmp_path / "out2").exists()
    # classic-Mac line ends: refused with the fix
    (tmp_path / "mac.tsv").write_bytes(b"\r".join(b"a %d\tb %d" % (i, i) for i in range(50)))
    r = invoke("prepare", "--tsv", str(tmp_path / "mac.tsv"), "--out", str(tmp_path / "out3"))
    assert r.exit_code == 2 and "lines end with CR alone" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_vocabulary_too_small_for_the_characters_is_one_readable_error(tmp_path):
    from tests.conftest import invoke

    chars = [chr(0x4E00 + i) for i in range(200)]
    rows = ["".join(chars[(i * 7 + k) % 200] for k in range(5)) + f"\tb {i}" for i in range(100)]
    (tmp_path / "cjk.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    r = invoke("prepare", "--tsv", str(tmp_path / "cjk.tsv"), "--out", str(tmp_path / "out"), "--vocab-size", "40",
               "--set", "data.dev_size=5", "--set", "data.test_size=5")
    err = r.stderr.strip()
    assert r.exit_code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: data.sentencepiece.vocab_size=40 is smaller than the ") and \
        "characters the corpus needs" in err, err
    assert not (tmp_path / "out").exists()
