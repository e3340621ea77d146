#!/usr/bin/env bash
# The whole study (issue 16) on one GPU machine, without Ray, in the order its steps depend on each other:
#   bash sweeps/study-gpu.sh [seconds]        (default 520; then it stops the sweeps and keeps what finished)
# study-budgets and study-ladder side by side (each model at its best lr of study-lr, written into their files), then
# study-lr itself (every ladder and leave-one-out variant x 4 lrs: the raw results behind those lrs). Sweeps resume by name: a rerun continues (finished trials are kept, and a long run whose
# branches lost its kept state trains again). Before the script returns, whatever happened, the raw results (no
# checkpoints) are packed into ${OUT:-.}/study.tgz: a remote machine's work must not leave with the machine.
# Many small trials share the GPU as plain processes (launch-bound at this size); 18 fill a 16-core H100/H200 box.
# Measured on one H200: 72 trials of 2M tokens in 310 s with 14 processes; 12 runs of 8M tokens in about 190 s. The
# whole study does not fit one 10-minute command: unpack study.tgz into the checkout (so the next call carries the
# finished trials) and run the script again; it continues where the last call stopped.
set -u
cd "$(dirname "$0")/.."
limit=${1:-520}
out=${OUT:-.}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
sweep="${PYTHON:-python3} cli.py sweep --local --config"
steps=(study-lr study-budgets study-ladder)
timeout -k 5 "$limit" bash -c "
  $sweep sweeps/study-budgets.yaml --max-concurrent 8 > $out/study-budgets.log 2>&1 &
  $sweep sweeps/study-ladder.yaml --max-concurrent 10 > $out/study-ladder.log 2>&1
  wait
  $sweep sweeps/study-lr.yaml --max-concurrent 16 > $out/study-lr.log 2>&1"
echo "sweeps ended (exit $?); packing the raw results"
sleep 2  # children of a stopped sweep get its SIGTERM too; give them a moment
dirs=(); for s in "${steps[@]}"; do [ -d "studies/$s" ] && dirs+=("studies/$s"); done
tar czf "$out/study.tgz" --exclude='checkpoint_*' --exclude=branch_points --exclude='*.old-*' --exclude='*.tmp*' \
    --exclude='.validate_storage_marker' "${dirs[@]}"
for s in "${steps[@]}"; do tr '\r' '\n' < "$out/$s.log" 2>/dev/null | grep -E '^(sweep|\[failed)' | tail -3; done
