#!/bin/bash
# Pruning the converged detector, every variant beside its controls (notebook 07 §7) -> benchmarks/results/prune_controls.json
#
# From tiny_detector_converged.pt (48 epochs), per seed 0, 1, 2 two runs of prune_sweep.py:
#   A: dense_ft, dense2x_ft, unstructured 80 %, and keep 75 % / 50 % ranked four ways + network slimming;
#   B: scratch_K, the keep-K shapes re-initialised and trained 54 epochs (the longest runs);
# then merge. Every variant of a seed sees the same data order, so the notebook compares seed by seed.
#
#   PARALLEL=2 bash benchmarks/prune_controls.sh    # two one-thread runs at a time: ~40 min on 2 CPU cores
# PARALLEL (default 1): how many runs at once; THREADS (default 1): threads per run; DEVICE: e.g. cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
S=benchmarks/prune_sweep.py
WORK=$(mktemp -d)
DEV=${DEVICE:+--device $DEVICE}
C="--start benchmarks/results/tiny_detector_converged.pt --skip-latency --threads ${THREADS:-1} $DEV --multiple-of 8 --out $WORK"
A="--sparsities 0.8 --keep 0.75 0.5 --slim-keep 0.75 0.5 --bnscale-keep 0.75 0.5 --folded-keep 0.75 0.5 --random-keep 0.75 0.5"
B="--no-dense --sparsities --keep --scratch-keep 0.75 0.5"
files=()
for part in A B; do
  for seed in 0 1 2; do
    files+=("$WORK/${part}_s$seed.json")
    while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-1}" ]; do wait -n; done
    echo "run ${part}_s$seed (log: $WORK/${part}_s$seed.log)"
    $PY $S $C ${!part} --seeds $seed --name ${part}_s$seed.json > "$WORK/${part}_s$seed.log" 2>&1 &
  done
done
wait  # every run must have finished (the merge below refuses a missing file)
$PY $S --merge "${files[@]}" --name prune_controls.json --description \
  "Pruning controls from the converged width-1 detector (tiny_detector_converged.pt, 48 epochs): 3 seeds per variant, channel counts multiples of 8; total_epochs gives each variant's training in all. Every pruned variant fine-tunes 6 epochs (AdamW, cosine from 2e-3) and is compared with dense_ft (the dense model fine-tuned as long, 54 epochs). Rankings of the same keep ratio: structured (L1 of raw filters), bnscale (|gamma|), folded (L1 of BN-folded filters), random (seeded per run). slim is network slimming (6 epochs with the L1 penalty on BN scales, prune by |gamma|, 6 more epochs: 60 epochs in all), with its own control dense2x_ft (the dense model fine-tuned 12 epochs). scratch is the structured shape re-initialised and trained from scratch with the start's recipe (one-cycle, peak lr 4e-3) for 54 epochs, the pruned model's total (Liu et al. 2019). Every variant of a seed sees the same data order (paired comparisons); scored on val and test (test_map). Latency not measured (see prune_sweep.json and ort_block_size.json for the shapes' timings). Made by benchmarks/prune_controls.sh (one-thread runs)."
