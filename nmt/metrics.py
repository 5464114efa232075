"""Scoring with sacreBLEU: BLEU, chrF and TER with their signatures.

``nmt eval`` and the validation during training call the same :func:`score`, so the dev
BLEU written to ``metrics.jsonl`` is what ``nmt eval`` prints for the same hypotheses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nmt.errors import InputError

METRICS = ("bleu", "chrf", "ter")


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score with the sacreBLEU signature that makes it reproducible."""

    name: str
    score: float
    signature: str
    text: str

    def to_dict(self) -> dict:
        """The result as plain data (for ``--json``)."""
        return {"name": self.name, "score": self.score, "signature": self.signature, "text": self.text}


def make_metric(name: str, lowercase: bool = False, tokenize: str | None = None):
    """A sacreBLEU metric object by name (``bleu``, ``chrf``, ``ter``)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    name = name.lower()
    if name == "bleu":
        return BLEU(lowercase=lowercase, tokenize=tokenize)
    if name == "chrf":
        return CHRF(lowercase=lowercase)
    if name == "ter":
        return TER(case_sensitive=not lowercase)
    raise InputError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")


def score(hypotheses: Sequence[str], references: Sequence[Sequence[str]], metrics: Sequence[str] = ("bleu",),
          lowercase: bool = False, tokenize: str | None = None) -> list[MetricResult]:
    """Score detokenized ``hypotheses`` against one or more reference streams."""
    for refs in references:
        if len(refs) != len(hypotheses):
            raise InputError(f"{len(hypotheses)} hypotheses but {len(refs)} references")
    out = []
    for name in metrics:
        metric = make_metric(name, lowercase, tokenize)
        result = metric.corpus_score(list(hypotheses), [list(r) for r in references])
        signature = str(metric.get_signature())
        out.append(MetricResult(name.lower(), float(result.score), signature, f"{result} {signature}"))
    return out


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU defaults) of one reference stream."""
    return score(hypotheses, [references])[0].score
