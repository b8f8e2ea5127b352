#!/bin/bash
# Pruning a better-trained detector (notebook 07 §7b) -> benchmarks/results/prune_converged.json
#
# 1. fine-tune the course detector 6 epochs (seed 0; prune_sweep.py's dense_ft recipe): the start model;
# 2. from it, the variants notebook 07 §7b shows (dense_ft, unstructured 80 %, keep 75 % and 50 %) x seed 0,1,2,
#    each in its own process (6 more fine-tuning epochs each);
# 3. merge the per-process files.
#
#   PARALLEL=2 bash benchmarks/prune_converged.sh       # CPU: two one-thread processes at a time (~15 min on 2 cores)
#   DEVICE=cuda PARALLEL=12 bash benchmarks/prune_converged.sh  # all 12 at once (~5 min on one data-centre GPU with 16 CPU cores)
# PARALLEL (default 1): how many runs at once; THREADS (default 1): threads per run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
S=benchmarks/prune_sweep.py
WORK=$(mktemp -d)
DEV=${DEVICE:+--device $DEVICE}
$PY $S --seeds 0 --sparsities --keep --skip-latency $DEV --save-models "$WORK/start" --out "$WORK" --name start.json
C="--start $WORK/start/dense_ft.pt --skip-latency --threads ${THREADS:-1} $DEV --multiple-of 8 --out $WORK"
files=()
for variant in "dense:--sparsities --keep" "unstr:--no-dense --sparsities 0.8 --keep" "k075:--no-dense --sparsities --keep 0.75" \
               "k05:--no-dense --sparsities --keep 0.5"; do
  name=${variant%%:*}; opts=${variant#*:}
  for seed in 0 1 2; do
    files+=("$WORK/${name}_s$seed.json")
    while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-1}" ]; do wait -n; done
    echo "run ${name}_s$seed (log: $WORK/${name}_s$seed.log)"
    $PY $S $C $opts --seeds $seed --name ${name}_s$seed.json > "$WORK/${name}_s$seed.log" 2>&1 &
  done
done
wait  # every run must have finished (set -e does not see a failed background job: the merge below refuses a missing file)
$PY $S --merge "${files[@]}" --name prune_converged.json --description \
  "Pruning a better-trained start: the course detector fine-tuned 6 epochs (seed 0, the dense_ft recipe) is the start of every variant (its val mAP: dense.val_map); each variant then fine-tunes 6 more epochs (3 seeds; every variant of a seed sees the same data order), channel counts multiples of 8; scored on val and test (test_map). Made by benchmarks/prune_converged.sh (one-thread runs)."
# the start lived in a scratch folder: name it instead of recording a path of this machine
$PY - <<'PY'
import json
path = "benchmarks/results/prune_converged.json"
result = json.load(open(path))
label = "tiny_detector.pt fine-tuned 6 epochs (dense_ft recipe, seed 0; made by prune_converged.sh step 1, not shipped)"
result["dense"]["start"] = result["config"]["start"] = label
open(path, "w").write(json.dumps(result, indent=2) + "\n")
PY
