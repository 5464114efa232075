#!/usr/bin/env bash
# The main job on the bundled English-French sample: prepare, train (at most 6 minutes on 2 CPU
# cores), translate a few sentences, score the held-out test set. Outputs go to runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
CFG=configs/quickstart_en_fr.yaml
RUN=runs/quickstart_en_fr
PREP=runs/prepared/quickstart_en_fr

nmt prepare --config "$CFG" --overwrite
nmt train --config "$CFG" --overwrite

echo
echo "== a few translations (nmt translate --model $RUN)"
printf '%s\n' "I am hungry." "Where is the station?" "She doesn't like coffee." "We have to leave now." \
  "Tom is reading a book." | nmt translate --model "$RUN" | tee runs/quickstart_examples.fr

echo
echo "== test set (500 held-out pairs): nmt eval"
nmt eval --model "$RUN" --src "$PREP/test/src.txt" --ref "$PREP/test/tgt.txt" \
  --metrics bleu,chrf --save-hyp runs/quickstart_test.hyp.fr
echo
echo "outputs: model and logs in $RUN/ (metrics.jsonl, train.log, checkpoints/, best/), prepared data in $PREP/,"
echo "         test translations in runs/quickstart_test.hyp.fr"
