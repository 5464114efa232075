"""Scoring with sacreBLEU: BLEU, chrF and TER with their signatures.

``nmt eval`` and the validation during training call the same :func:`score`, so the dev
BLEU written to ``metrics.jsonl`` is what ``nmt eval`` prints for the same hypotheses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nmt.errors import InputError

if TYPE_CHECKING:
    from sacrebleu.metrics.base import Metric

METRICS = ("bleu", "chrf", "ter")


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score with the sacreBLEU signature that makes it reproducible."""

    name: str
    score: float
    signature: str
    text: str
    mean: float | None = None          # bootstrap mean (with --confidence or --baseline)
    ci: float | None = None            # 95% confidence half-width
    baseline: float | None = None      # the baseline's score (with --baseline)
    p_value: float | None = None       # paired bootstrap p-value against the baseline

    def to_dict(self) -> dict:
        """The result as plain data (for ``--json``); absent statistics are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def make_metric(name: str, lowercase: bool = False, tokenize: str | None = None) -> Metric:
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
          lowercase: bool = False, tokenize: str | None = None, confidence: bool = False,
          n_bootstrap: int = 1000) -> list[MetricResult]:
    """Score detokenized ``hypotheses`` against one or more reference streams.

    With ``confidence``, sacreBLEU's bootstrap resampling adds the mean and the 95% interval.
    """
    for refs in references:
        if len(refs) != len(hypotheses):
            raise InputError(f"{len(hypotheses)} hypotheses but {len(refs)} references")
    out = []
    for name in metrics:
        metric = make_metric(name, lowercase, tokenize)
        result = metric.corpus_score(list(hypotheses), [list(r) for r in references],
                                     n_bootstrap=n_bootstrap if confidence else 1)
        signature = str(metric.get_signature())
        mean = getattr(result, "_mean", None) if confidence else None
        ci = getattr(result, "_ci", None) if confidence else None
        out.append(MetricResult(name.lower(), float(result.score), signature, f"{result} {signature}",
                                mean=None if mean is None else float(mean), ci=None if ci is None else float(ci)))
    return out


def paired_test(hypotheses: Sequence[str], baseline: Sequence[str], references: Sequence[Sequence[str]],
                metrics: Sequence[str] = ("bleu",), lowercase: bool = False, tokenize: str | None = None,
                n_samples: int = 1000) -> list[MetricResult]:
    """Paired bootstrap resampling (sacreBLEU's) of ``hypotheses`` against ``baseline``."""
    from sacrebleu.significance import PairedTest

    for refs in references:
        if len(refs) != len(hypotheses) or len(baseline) != len(hypotheses):
            raise InputError(f"{len(hypotheses)} hypotheses, {len(baseline)} baseline lines, {len(refs)} references")
    named = {name: make_metric(name, lowercase, tokenize) for name in metrics}
    test = PairedTest([("baseline", list(baseline)), ("system", list(hypotheses))], dict(named),
                      [list(r) for r in references], test_type="bs", n_samples=n_samples)
    signatures, table = test()
    out = []
    for name, sig_key in zip(named, signatures):
        base, system = table[sig_key]
        signature = str(signatures[sig_key])
        p = float(system.p_value)
        text = (f"{sig_key} = {system.score:.2f} (μ = {float(system.mean):.2f} ± {float(system.ci):.2f}) vs baseline "
                f"{base.score:.2f} (μ = {float(base.mean):.2f} ± {float(base.ci):.2f}), p = {p:.4f} {signature}")
        out.append(MetricResult(name, float(system.score), signature, text, mean=float(system.mean),
                                ci=float(system.ci), baseline=float(base.score), p_value=p))
    return out


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU defaults) of one reference stream."""
    return score(hypotheses, [references])[0].score
