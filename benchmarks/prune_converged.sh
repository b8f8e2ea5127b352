#!/bin/bash
# Pruning a better-trained detector (notebook 07 §7b) -> benchmarks/results/prune_converged.json
#
# 1. fine-tune the course detector 6 epochs (seed 0; prune_sweep.py's dense_ft recipe): the start model;
# 2. from it, every variant x seed 0,1,2 in its own process (6 more fine-tuning epochs each);
# 3. merge the per-process files.
#
#   bash benchmarks/prune_converged.sh                  # CPU, one process at a time: ~30 min on 2 cores
#   DEVICE=cuda PARALLEL=1 bash benchmarks/prune_converged.sh   # all 18 at once (~5 min on one data-centre GPU with 16 CPU cores)
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
               "k06:--no-dense --sparsities --keep 0.6" "k05:--no-dense --sparsities --keep 0.5" \
               "it05:--no-dense --sparsities --keep --iterative-keep 0.5"; do
  name=${variant%%:*}; opts=${variant#*:}
  for seed in 0 1 2; do
    files+=("$WORK/${name}_s$seed.json")
    if [ -n "${PARALLEL:-}" ]; then
      $PY $S $C $opts --seeds $seed --name ${name}_s$seed.json > "$WORK/${name}_s$seed.log" 2>&1 &
    else
      $PY $S $C $opts --seeds $seed --name ${name}_s$seed.json
    fi
  done
done
wait
$PY $S --merge "${files[@]}" --name prune_converged.json --description \
  "Pruning a better-trained start: the course detector fine-tuned 6 epochs (seed 0, the dense_ft recipe) is the start of every variant (its val mAP: dense.val_map); each variant then fine-tunes 6 more epochs (3 seeds), channel counts multiples of 8. Made by benchmarks/prune_converged.sh."
