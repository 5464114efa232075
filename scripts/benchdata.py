"""Data the benchmark scripts share: Multi30k en-de (or the bundled sample for --quick), prepared once."""

from __future__ import annotations

from pathlib import Path

from nmt.config import config_from_dict
from nmt.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
M30K = ROOT.parent / "shared" / "data" / "multi30k"
# The reference model of the speed issues: bi-GRU 256 per direction, GRU 512, Bahdanau attention, embeddings 256.
REFERENCE_MODEL = {"embedding_dim": 256, "encoder_units": 256, "decoder_units": 512, "attention_units": 512,
                   "attentional_units": 512, "dropout": 0.2}
# The shape of the quick modes' model (on the bundled sample, vocabulary 500).
TINY_MODEL = {"embedding_dim": 32, "encoder_units": 32, "decoder_units": 64, "attention_units": 32,
              "attentional_units": 64}


def prepared_dir(work: Path, vocab: int, quick: bool) -> Path:
    out = work / f"prepared_v{vocab}{'_quick' if quick else ''}"
    if (out / "manifest.json").is_file():
        return out
    if quick:
        data = {"train_tsv": str(ROOT / "data" / "fra-eng-sample.tsv.gz"), "dev_size": 100, "test_size": 100}
    else:
        data = {"train_src": str(M30K / "train.en"), "train_tgt": str(M30K / "train.de"),
                "dev_src": str(M30K / "val.en"), "dev_tgt": str(M30K / "val.de"),
                "test_src": str(M30K / "test2016.en"), "test_tgt": str(M30K / "test2016.de")}
    sp = {"vocab_size": vocab, "model_type": "unigram" if vocab <= 8000 else "bpe"}
    prepare(config_from_dict({"data": {**data, "prepared_dir": str(out), "sentencepiece": sp}}),
            overwrite=True, log=lambda s: None)
    return out
