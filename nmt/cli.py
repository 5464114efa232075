"""The ``nmt`` command line: parse, call the library, turn errors into one line and an exit code.

Exit codes: 0 success, 2 bad usage or input, 1 failure at run time, 128+N after signal N.
Set ``NMT_DEBUG=1`` to see Python tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nmt import __version__
from nmt.errors import InputError, NmtError

CHECKPOINT_HELP = "best, last, averaged (nmt average) or a checkpoint path"


def _debug() -> bool:
    return os.environ.get("NMT_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn library exceptions into a one-line message and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NmtError as exc:
            if _debug():
                raise
            _fail(str(exc), exc.exit_code)
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory", 1)
        except OSError as exc:
            if _debug():
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(f"{where}{exc.strerror or exc}", 1)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if _debug():
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            _fail(f"internal error: {type(exc).__name__}: {first} (set NMT_DEBUG=1 for the traceback)", 1)

    return wrapper


def import_tensorflow() -> None:
    """Import TensorFlow once, hiding the C++ start-up noise (missing CUDA drivers on CPU hosts)."""
    if "tensorflow" in sys.modules:
        return
    from nmt.sysinfo import tensorflow_environment

    tensorflow_environment(quiet=True)
    if _debug():
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_config(config: str | None, overrides: tuple[str, ...]):
    from nmt.config import load_config

    return load_config(config, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="nmt")
def main() -> None:
    """GRU encoder-decoder NMT with Bahdanau attention on TensorFlow.

    \b
    Example (the bundled English-French sample):
      nmt prepare --config configs/quickstart_en_fr.yaml
      nmt train --config configs/quickstart_en_fr.yaml
      echo "How are you?" | nmt translate --model runs/quickstart_en_fr
    """


# --------------------------------------------------------------------------- prepare
@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="experiment YAML (its data section)")
@click.option("--src", help="source side of the training corpus (one sentence a line; .gz read too)")
@click.option("--tgt", help="target side, aligned line by line with --src")
@click.option("--tsv", help="the training corpus as a TSV file instead of --src/--tgt")
@click.option("--tsv-columns", help="0-based source,target columns of the TSV (default 0,1)")
@click.option("--dev-src", help="explicit dev set, source side")
@click.option("--dev-tgt", help="explicit dev set, target side")
@click.option("--test-src", help="explicit test set, source side")
@click.option("--test-tgt", help="explicit test set, target side")
@click.option("--out", help="prepared directory to write (data.prepared_dir)")
@click.option("--vocab-size", type=int, help="SentencePiece vocabulary size")
@click.option("--on-invalid-utf8", type=click.Choice(["error", "skip", "replace"]), help="invalid UTF-8 lines")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a config key (repeatable)")
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@handle_errors
def prepare(config, src, tgt, tsv, tsv_columns, dev_src, dev_tgt, test_src, test_tgt, out, vocab_size,
            on_invalid_utf8, overrides, overwrite) -> None:
    """Clean, split, learn SentencePiece and encode a parallel corpus.

    \b
    Examples:
      nmt prepare --config configs/quickstart_en_fr.yaml
      nmt prepare --src train.en --tgt train.de --out prepared/en-de
      nmt prepare --tsv fra.txt --tsv-columns 0,1 --out prepared/en-fr --vocab-size 8000
    """
    from nmt.prepare import prepare as run_prepare

    flags = dict(train_src=src, train_tgt=tgt, train_tsv=tsv, dev_src=dev_src, dev_tgt=dev_tgt,
                 test_src=test_src, test_tgt=test_tgt, prepared_dir=out, on_invalid_utf8=on_invalid_utf8)
    sets = [f"data.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if tsv is not None or src is not None:
        # files given on the command line replace the config's training corpus
        other = ("train_src", "train_tgt") if tsv is not None else ("train_tsv",)
        sets += [f"data.{k}=null" for k in other]
    if tsv_columns is not None:
        try:
            s, t = (int(x) for x in tsv_columns.split(","))
        except ValueError:
            raise InputError(f"--tsv-columns {tsv_columns!r}: expected two integers like 0,1") from None
        sets += [f"data.tsv_src_column={s}", f"data.tsv_tgt_column={t}"]
    if vocab_size is not None:
        sets.append(f"data.sentencepiece.vocab_size={vocab_size}")
    if config is None and out is None:
        raise InputError("give --config or --out")
    cfg = _load_config(config, (*sets, *overrides))
    run_prepare(cfg, overwrite=overwrite, log=click.echo)


# --------------------------------------------------------------------------- train
@main.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False), help="experiment YAML")
@click.option("--resume", is_flag=True, help="continue the run directory from its last checkpoint")
@click.option("--overwrite", is_flag=True, help="delete the run directory and start again")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. --set training.max_steps=500 (repeatable)")
@handle_errors
def train(config, resume, overwrite, overrides) -> None:
    """Train the GRU encoder-decoder described by a config.

    \b
    Examples:
      nmt train --config configs/quickstart_en_fr.yaml
      nmt train --config configs/multi30k_en_de.yaml --set training.max_minutes=30
      nmt train --config configs/multi30k_en_de.yaml --resume
    """
    if resume and overwrite:
        raise InputError("--resume and --overwrite are exclusive")
    cfg = _load_config(config, overrides)
    import_tensorflow()
    from nmt.training import train as run_train

    result = run_train(cfg, resume=resume, overwrite=overwrite)
    click.echo(f"run directory: {result.run_dir} (step {result.step}, best dev BLEU {result.best_bleu:.2f})")


# --------------------------------------------------------------------------- translate
@main.command()
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--checkpoint", default="best", show_default=True, help=CHECKPOINT_HELP)
@click.option("--input", "input_path", type=click.Path(dir_okay=False), help="read this file instead of stdin")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="write this file instead of stdout")
@click.option("--beam", type=click.IntRange(1, 64), help="beam size (1 = greedy; default: the run's config)")
@click.option("--n-best", type=click.IntRange(1, 64), default=1, show_default=True,
              help="hypotheses per line, printed as text<TAB>score pairs on the line (fewer where a "
                   "sentence's output limit allows fewer)")
@click.option("--length-penalty", type=click.FloatRange(0.0), help="beam search length penalty")
@click.option("--batch-size", type=click.IntRange(1), help="sentences per decoding batch")
@click.option("--shortlist/--no-shortlist", default=None,
              help="decode over a lexical shortlist (faster, outputs may differ; default: the run's config)")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]),
              help="matmuls of the decoding steps (bfloat16: faster on CPUs with AVX-512 BF16 or AMX, outputs may "
                   "differ; default: the run's config)")
@click.option("--cpu-threads", type=click.IntRange(1, 1024), help="CPU threads in all (default: the run's config)")
@click.option("--parallel-batches", type=click.IntRange(1, 64),
              help="batches decoded at once on CPUs, sharing --cpu-threads (default: the run's config)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line: source, translation, score, tokens")
@click.option("--pieces", is_flag=True, help="print SentencePiece pieces instead of detokenized text")
@click.option("--attention-dir", type=click.Path(file_okay=False), help="write attention.jsonl and PNG heatmaps here")
@click.option("--attention-max", type=click.IntRange(0), default=100, show_default=True,
              help="lines to write attention for")
@click.option("--report-time", is_flag=True,
              help="print the model's load time and the translation speed on stderr at the end")
@handle_errors
def translate(run_dir, checkpoint, input_path, output_path, beam, n_best, length_penalty, batch_size, shortlist,
              precision, cpu_threads, parallel_batches, as_json, pieces, attention_dir, attention_max,
              report_time) -> None:
    """Translate stdin to stdout, one output line per input line.

    \b
    Examples:
      echo "How are you?" | nmt translate --model runs/quickstart_en_fr
      nmt translate --model runs/multi30k_en_de --beam 5 --input test.en --output test.hyp
      nmt translate --model runs/quickstart_en_fr --attention-dir attn/ < some.en
    """
    if n_best > 1 and beam is not None and n_best > beam:
        raise InputError(f"--n-best {n_best} needs --beam of at least {n_best}")
    start = time.perf_counter()
    import_tensorflow()
    from nmt.translate import Translator, translate_stream

    translator = Translator(run_dir, checkpoint, length_penalty=length_penalty, batch_size=batch_size,
                            shortlist=shortlist, precision=precision, cpu_threads=cpu_threads,
                            parallel_batches=parallel_batches)
    loaded = time.perf_counter()
    if n_best > 1 and beam is None:
        beam = max(n_best, translator.decoding.beam_size)
    with contextlib.ExitStack() as stack:
        if input_path:
            if not Path(input_path).is_file():
                raise InputError(f"{input_path}: file not found")
            source = stack.enter_context(open(input_path, "rb"))
        else:
            source = sys.stdin.buffer
        if output_path:
            from nmt.fileio import atomic_open

            sink = stack.enter_context(atomic_open(output_path))
        else:
            sink = sys.stdout
        # Lines read at once, sorted by length into batches (100 batches, as Marian's --maxi-batch 100:
        # measured 11% faster than 16 on 4,000 lines, fewer ends of chunk where threads wait);
        # one at a time from a terminal.
        chunk = 1 if source.isatty() else max(256, 100 * translator.decoding.batch_size)
        try:
            stats = translate_stream(translator, source, sink, beam=beam, n_best=n_best, as_json=as_json,
                                     pieces=pieces, chunk_lines=chunk,
                                     attention_dir=Path(attention_dir) if attention_dir else None,
                                     attention_max=attention_max)
        except BrokenPipeError:
            raise
        except OSError as exc:  # a full disk or a failing device; a partial --output file is removed
            where = exc.filename or output_path or "standard output"
            raise NmtError(f"{where}: cannot write ({exc.strerror or exc})") from None
    if report_time:  # decoding includes tracing the decoder for the first batch shapes, as a user waits for it
        seconds = max(time.perf_counter() - loaded, 1e-9)
        click.echo(f"translated {stats.lines:,} line{'' if stats.lines == 1 else 's'} ({stats.target_pieces:,} "
                   f"target pieces) in {seconds:.3f} s: "
                   f"{stats.lines / seconds:,.1f} lines/s, {stats.target_pieces / seconds:,.0f} pieces/s; "
                   f"TensorFlow and the model loaded in {loaded - start:.3f} s", err=True)
    if stats.truncated:
        click.echo(f"warning: {stats.truncated} line(s) longer than {translator.decoding.max_source_pieces} "
                   "pieces were truncated", err=True)
    if stats.invalid_utf8:
        click.echo(f"warning: {stats.invalid_utf8} line(s) had invalid UTF-8 (replaced with U+FFFD)", err=True)


# --------------------------------------------------------------------------- export
@main.command()
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="SavedModel directory to write")
@click.option("--checkpoint", default="best", show_default=True, help=CHECKPOINT_HELP)
@click.option("--beam", type=click.IntRange(1, 64), help="beam size (1: greedy; default: the run's decoding.beam_size)")
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@handle_errors
def export(run_dir, out_dir, checkpoint, beam, overwrite) -> None:
    """Export a trained model as a SavedModel that translates raw text.

    Normalisation, SentencePiece and decoding run inside the graph: the consumer needs
    TensorFlow and tensorflow-text, not nmt. See README.txt in the export directory.

    \b
    Example:
      nmt export --model runs/quickstart_en_fr --out exported/en_fr --beam 5
    """
    import_tensorflow()
    from nmt.export import SIGNATURE, export_model

    out = export_model(run_dir, out_dir, checkpoint=checkpoint, beam=beam, overwrite=overwrite)
    click.echo(f"exported {out} (signature {SIGNATURE!r}: text -> translations, scores; see {out / 'README.txt'})")


# --------------------------------------------------------------------------- average
@main.command()
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--last", type=click.IntRange(1), help="average the run's N newest checkpoints (checkpoints/)")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help=f"a checkpoint to average (repeat it): {CHECKPOINT_HELP}")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="directory to write (default: <run>/averaged, read by --checkpoint averaged)")
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@handle_errors
def average(run_dir, last, checkpoints, out_dir, overwrite) -> None:
    """Average the weights of several checkpoints of a run into one checkpoint.

    \b
    Example:
      nmt average --model runs/multi30k_en_fr --last 5
      nmt translate --model runs/multi30k_en_fr --checkpoint averaged < test.en
    """
    from nmt.average import select_checkpoints

    prefixes = select_checkpoints(run_dir, last, checkpoints)
    import_tensorflow()
    from nmt.average import average_checkpoints

    written = average_checkpoints(run_dir, prefixes, out_dir, overwrite=overwrite)
    steps = ", ".join(Path(p).name for p in prefixes)
    click.echo(f"averaged {len(prefixes)} checkpoint(s) ({steps}) into {written}")


# --------------------------------------------------------------------------- eval
def _read_text(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise InputError(f"{p}:{line}: invalid UTF-8") from None
    if not text:
        raise InputError(f"{p}: empty file")
    return text.splitlines()


@main.command(name="eval")
@click.option("--hyp", "hyp_path", type=click.Path(dir_okay=False), help="hypothesis file (detokenized)")
@click.option("--ref", "ref_paths", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="reference file (repeat for several references)")
@click.option("--model", "run_dir", type=click.Path(file_okay=False), help="translate --src with this run first")
@click.option("--src", "src_path", type=click.Path(dir_okay=False), help="source file to translate with --model")
@click.option("--checkpoint", default="best", show_default=True, help=f"with --model: {CHECKPOINT_HELP}")
@click.option("--beam", type=click.IntRange(1, 64), help="with --model: beam size")
@click.option("--length-penalty", type=click.FloatRange(0.0), help="with --model: beam search length penalty")
@click.option("--shortlist/--no-shortlist", default=None, help="with --model: decode over a lexical shortlist")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), help="with --model: decoding matmuls")
@click.option("--save-hyp", type=click.Path(dir_okay=False), help="with --model: keep the translations here")
@click.option("--metrics", default="bleu", show_default=True, help="comma-separated: bleu, chrf, ter")
@click.option("--lowercase", is_flag=True, help="case-insensitive scoring")
@click.option("--tokenize", help="sacreBLEU tokenizer for BLEU (13a, intl, char, none, ...)")
@click.option("--confidence", is_flag=True, help="add bootstrap 95% confidence intervals (1000 resamples)")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False),
              help="paired bootstrap significance test against this baseline hypothesis file")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
@handle_errors
def evaluate(hyp_path, ref_paths, run_dir, src_path, checkpoint, beam, length_penalty, shortlist, precision, save_hyp,
             metrics, lowercase, tokenize, confidence, baseline_path, as_json) -> None:
    """Score translations with sacreBLEU (BLEU, chrF, TER), signatures included.

    \b
    Examples:
      nmt eval --hyp test.hyp --ref test.de --metrics bleu,chrf,ter
      nmt eval --hyp new.hyp --ref test.de --baseline old.hyp      # paired bootstrap p-values
      nmt eval --model runs/multi30k_en_de --src test2016.en --ref test2016.de --save-hyp test.hyp
    """
    from nmt.metrics import METRICS, paired_test, score

    names = [m.strip().lower() for m in metrics.split(",") if m.strip()]
    for name in names:
        if name not in METRICS:
            raise InputError(f"--metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}")
    if bool(hyp_path) == bool(run_dir):
        raise InputError("give either --hyp, or --model with --src")
    refs = [_read_text(r) for r in ref_paths]
    if run_dir:
        if not src_path:
            raise InputError("--model needs --src")
        sources = _read_text(src_path)
        import_tensorflow()
        from nmt.translate import Translator

        translator = Translator(run_dir, checkpoint, length_penalty=length_penalty, shortlist=shortlist,
                                precision=precision)
        hyps = [t.text for t in translator.translate(sources, beam=beam, with_scores=False)]
        if save_hyp:
            from nmt.fileio import atomic_write_text

            atomic_write_text(save_hyp, "".join(h + "\n" for h in hyps))
        hyp_name = src_path
    else:
        hyps = _read_text(hyp_path)
        hyp_name = hyp_path
    for path, r in zip(ref_paths, refs):
        if len(r) != len(hyps):
            raise InputError(f"line counts differ: {hyp_name} has {len(hyps)} lines, {path} has {len(r)}")
    if baseline_path:
        baseline = _read_text(baseline_path)
        if len(baseline) != len(hyps):
            raise InputError(f"line counts differ: {hyp_name} has {len(hyps)} lines, {baseline_path} has "
                             f"{len(baseline)}")
        results = paired_test(hyps, baseline, refs, names, lowercase=lowercase, tokenize=tokenize)
    else:
        results = score(hyps, refs, names, lowercase=lowercase, tokenize=tokenize, confidence=confidence)
    if as_json:
        click.echo(json.dumps({"hypotheses": hyp_name, "references": list(ref_paths),
                               "results": [r.to_dict() for r in results]}, ensure_ascii=False))
    else:
        for r in results:
            click.echo(r.text)


if __name__ == "__main__":  # pragma: no cover
    main()
