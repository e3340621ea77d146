#!/usr/bin/env bash
# SUPERSEDED: the d128 study of studies/superseded/RESULTS-2026-11-budgets.md; the current one is study-sizes.yaml.
# The whole d128 study on one GPU machine, without Ray, in the order its steps depend on each other:
#   bash sweeps/study-gpu.sh [seconds]        (default 560; then it stops the sweeps and keeps what finished)
# study-budgets, study-ladder and study-lr-edge side by side (each model at its best lr of study-lr, written into
# their files), then study-lr itself (every ladder and leave-one-out variant x 4 lrs: the raw results behind those
# lrs). Sweeps resume by name: a rerun continues (finished trials are kept, and a branch whose long run finished
# without keeping its state trains from step 0). Before the script returns, whatever happened, the finished trials'
# raw results (no checkpoints) are packed into ${OUT:-.}/study.tgz: a remote machine's work must not leave with it.
# Many small trials share the GPU as plain processes (launch-bound at this size); 18 fill a 16-core H100/H200 box.
# Measured on one H200: the 24 cooldown branches at 2M and 4M tokens in 289 s beside the 36 ladder trials (281 s);
# the 72 lr trials in about 380 s; the 12 long runs to 8M tokens in about 190 s. The whole study does not fit one
# 10-minute command: unpack study.tgz into the checkout (so the next call carries the finished trials) and run the
# script again; it continues where the last call stopped.
set -u
cd "$(dirname "$0")/.."
limit=${1:-560}
out=${OUT:-.}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
sweep="${PYTHON:-python3} cli.py sweep --local --config"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ${PYTHON:-python3} -c "import torch; print(torch.__version__)"
  echo "$(nproc --all) CPUs"; } > "$out/machine.txt" 2>&1
steps=(study-lr study-lr-edge study-budgets study-ladder)
# 18 processes throughout: the sweeps the answer rests on first, then the lr sweep.
timeout -k 5 "$limit" bash -c "
  $sweep sweeps/study-budgets.yaml --max-concurrent 8 > $out/study-budgets.log 2>&1 &
  $sweep sweeps/study-lr-edge.yaml --max-concurrent 1 > $out/study-lr-edge.log 2>&1 &
  $sweep sweeps/study-ladder.yaml --max-concurrent 9 > $out/study-ladder.log 2>&1
  wait
  $sweep sweeps/study-lr.yaml --max-concurrent 18 > $out/study-lr.log 2>&1"
echo "sweeps ended (exit $?); packing the raw results"
sleep 2  # children of a stopped sweep get its SIGTERM too; give them a moment
# Finished trials only (a summary.json): a cut-off trial starts over on the next call anyway.
dirs=(); for s in "${steps[@]}"; do [ -d "studies/$s" ] && dirs+=("studies/$s"); done
unfinished=$(for d in "${dirs[@]}"; do for t in "$d"/trials/*/; do [ -f "$t/summary.json" ] || echo "${t%/}"; done; done)
tar czf "$out/study.tgz" --exclude='checkpoint_*' --exclude=branch_points --exclude='*.old-*' --exclude='*.tmp*' \
    --exclude='.validate_storage_marker' ${unfinished:+$(printf -- "--exclude=%s " $unfinished)} "${dirs[@]}"
for s in "${steps[@]}"; do [ -f "$out/$s.log" ] && tr '\r' '\n' < "$out/$s.log" | grep -E '^(sweep|\[failed)' | tail -3; done
