#!/usr/bin/env bash
# On the lent GPU machine: install the wheels bench/gpu_wheels.sh gathered (carry .whl),
# then run GPU benchmarks and copy their JSON to $OUT. One device call, e.g.
#     bash bench/gpu_run.sh latency eval        (each step prints its table)
# Steps: latency (3B + SAM2-L, eager; SAM's encoder in bf16, the default), samfp32 (the same
# with SAM's encoder in fp32, the before of that default), compile (--compile-decode), eval
# (samples/s at batch 1/4/16), grpo (loss pass by micro-batch; 30 GRPO steps on CUDA),
# tests (the engine suite with a GPU present).
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
status=0
run() { echo "== $*"; python3 "$@" || { echo "FAILED: $*"; status=1; }; }
for step in "${@:-latency}"; do
    case "$step" in
        latency) run bench/latency.py --device cuda ;;
        samfp32) run bench/latency.py --device cuda --sam-dtype fp32 --no-e2e --tokens 16 ;;
        compile) run bench/latency.py --device cuda --compile ;;
        eval) run bench/eval_throughput.py --device cuda ;;
        grpo) run bench/grpo_update.py --device cuda
              run bench/grpo_learning.py --device cuda --steps 30 ;;
        tests) run -m pytest -q -x -p no:cacheprovider tests/engine ;;
        *) echo "unknown step: $step"; status=2 ;;
    esac
done
if [ -n "${OUT:-}" ]; then cp bench/results/*.json bench/results/*.png "$OUT"/ 2>/dev/null; fi
exit $status
