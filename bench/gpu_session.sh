#!/usr/bin/env bash
# The one prepared call for a lent GPU machine: issue 15's GPU measurements in at most 8 minutes.
#
#   make gpu-prepare                      # here, with network: the tokenizer and liger-kernel's wheel -> build/gpu/
#   device tool: run  command="bash bench/gpu_session.sh"  carry=["build/gpu"]  timeout_s=580
#   bash bench/gpu_session.sh --tiny      # here, on CPU: the same parts on a 2-layer stand-in (~2 minutes)
#
# Each part has its own time limit, so a slow part cannot eat the others' minutes, and each writes
# its output as it goes: a part cut off still shows what it finished. Outputs go to $OUT (the
# device tool brings them back; commit them under bench/results/), or build/gpu/out by hand.
# The machine has torch, transformers, accelerate and peft and no network: rote runs from src/.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-build/gpu/out}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1  # a part cut off by its time limit keeps what it printed
py=${PYTHON:-python3}
{ nvidia-smi; nproc; $py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  > "$out/machine.txt" 2>&1
if [[ " $* " != *" --tiny "* ]]; then  # a lent machine's Python, thrown away after; never a venv here
  $py -m pip install --no-deps --no-index build/gpu/wheels/*.whl > "$out/pip.txt" 2>&1 \
    || echo "liger-kernel: not installed (the kernels part skips it)" >> "$out/pip.txt"
fi

extra=("$@")  # e.g. --tiny
part() {  # name, time limit in seconds, bench_gpu.py's arguments
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$py" bench/bench_gpu.py --tokenizer build/gpu/tokenizer --out "$out/$name.json" "$@" "${extra[@]}" \
    > "$out/$name.txt" 2> "$out/$name.err"
  echo "$name: exit $? at $(date +%T)" | tee -a "$out/parts.txt"
  tail -n 25 "$out/$name.txt"
}

# Issue 15's targets, most wanted first: the paper's phase 1 (<= 3 s, >= 50% of the bf16 peak),
# a paper-scale `rote run` (<= 60 s for all stages; 10,000 queries, 2,500 of them scored over 100
# options, so it gets the most time), fused kernels (keep what measures faster) and multiple
# choice by rows per batch.
part phase1 90 --only phase1 --phase1-batches 256 512 --reference-steps 45
part run 300 --only run
part kernels 120 --only kernels scoring
