"""Config loading and validation: every error names the file and the key path."""

from __future__ import annotations

import dataclasses

import pytest

from nmt.config import Config, config_from_dict, load_config, reference_yaml
from nmt.errors import InputError
from tests.conftest import ROOT, invoke


def error_of(raw, overrides=()) -> str:
    with pytest.raises(InputError) as info:
        config_from_dict(raw, "exp.yaml", overrides)
    return str(info.value)


def test_defaults_and_frozen():
    cfg = config_from_dict({}, "x")
    assert cfg.model.attention_placement == "post" and cfg.training.num_sampled == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.dropout = 0.5  # type: ignore[misc]


def test_unknown_key_suggests_the_close_one():
    msg = error_of({"training": {"learnig_rate": 0.1}})
    assert msg == "exp.yaml: unknown key 'training.learnig_rate' (did you mean 'training.learning_rate'?)"
    assert "unknown key 'modle'" in error_of({"modle": {}})


def test_wrong_types_and_ranges_name_file_and_key():
    msg = error_of({"model": {"embedding_dim": "big"}})
    assert msg == "exp.yaml: model.embedding_dim must be an integer, got 'big'"
    assert error_of({"model": {"dropout": 1.5}}) == "exp.yaml: model.dropout must be <= 0.9, got 1.5"
    assert "training.learning_rate must be > 0" in error_of({"training": {"learning_rate": 0}})
    assert "model.embedding_dim must be an integer, got True" in error_of({"model": {"embedding_dim": True}})
    msg = error_of({"model": {"attention_placement": "feeed"}})
    assert "model.attention_placement must be one of 'post', 'feed'" in msg and "did you mean 'feed'" in msg
    assert "exp.yaml: data must be a mapping" in error_of({"data": [1, 2]})
    assert "the top level must be a mapping" in error_of([1, 2])
    assert "data.sentencepiece.vocab_size must be >= 8" in error_of({"data": {"sentencepiece": {"vocab_size": 2}}})
    assert "decoding.parallel_batches must be <= 64" in error_of({"decoding": {"parallel_batches": 65}})
    assert "decoding.cpu_threads must be >= 0" in error_of({"decoding": {"cpu_threads": -1}})
    assert "decoding.precision must be one of 'float32', 'bfloat16'" in error_of({"decoding": {"precision": "fp16"}})
    assert "training.parallel_parts must be <= 64" in error_of({"training": {"parallel_parts": 65}})
    assert "training.threads must be >= 0" in error_of({"training": {"threads": -1}})
    msg = error_of({}, ["training.decay=cosin"])  # a --set value is checked as the file's own would be
    assert msg.startswith("exp.yaml: training.decay must be one of 'none', ") and "did you mean 'cosine'" in msg


def test_cross_key_rules():
    assert "data.train_src and data.train_tgt must be given together" in error_of({"data": {"train_src": "a"}})
    assert "tie_target_embedding" in error_of({"model": {"tie_target_embedding": True, "embedding_dim": 8}})
    assert "training.precision bfloat16 and training.mixed_precision on are exclusive" in error_of(
        {"training": {"precision": "bfloat16", "mixed_precision": "on"}})


def test_set_overrides_parse_yaml_scalars():
    cfg = config_from_dict({}, "x", ["training.max_steps=77", "model.dropout=0.5", "training.max_minutes=null",
                                     "data.lowercase=true", "data.src_lang=de"])
    assert (cfg.training.max_steps, cfg.model.dropout, cfg.data.lowercase, cfg.data.src_lang) == (77, 0.5, True, "de")
    assert "expected key.path=value" in error_of({}, ["training.max_steps"])
    assert "unknown key 'training.max_step'" in error_of({}, ["training.max_step=3"])


def test_yaml_python_tags_are_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="evil.yaml:1: invalid YAML"):
        load_config(p)


def test_bad_yaml_and_missing_file_via_cli(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  prepared_dir: [unclosed\n")
    result = invoke("prepare", "--config", str(p))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {p}:") and "invalid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = invoke("train", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_shipped_configs_are_valid_and_reference_is_current():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), Config), path
    assert (ROOT / "configs" / "reference.yaml").read_text() == reference_yaml(), \
        "configs/reference.yaml is stale: run python -m nmt.config > configs/reference.yaml"
