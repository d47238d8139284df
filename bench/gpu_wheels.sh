#!/usr/bin/env bash
# Gather, here, the wheels the lent GPU machine lacks (it has no network; Python 3.12,
# torch 2.11, transformers 5.17, accelerate, peft, scipy, opencv), into .whl/ (git-ignored),
# for bench/gpu_run.sh. Versions are those of requirements/engine*.txt. A call carries at
# most 64 MiB: the benchmarks' set is ~55 MiB; pyproj (geo/measure) and DeepSpeed are left
# out unless named, e.g. `bench/gpu_wheels.sh deepspeed` for a ZeRO-3 run (drop rasterio
# then: training needs no GeoTIFFs).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
rm -f .whl/*.whl
PY=${PY:-.venv/bin/python}
get() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$@"
}
pin() { grep -i "^$1==" requirements/engine.txt; }
for name in transformers tokenizers huggingface_hub httpx2 httpcore2 rasterio affine cligj \
            click-plugins shapely hydra-core omegaconf segment-anything "$@"; do
    [ "$name" = deepspeed ] && continue
    get "$(pin "$name")"
done
# sdists: pure-Python wheels built here (sam2 without its CUDA extension and DeepSpeed
# without ops, as the engine environment installs them)
"$PY" -m pip wheel -q --no-deps -w .whl "$(pin antlr4-python3-runtime)" "$(pin iopath)"
SAM2_BUILD_CUDA=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl \
    "$(grep '^sam2==' requirements/engine-nobuildiso.txt)"
if [[ " $* " == *" deepspeed "* ]]; then
    get "$(pin hjson)"
    DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl \
        "$(grep '^deepspeed==' requirements/engine-nobuildiso.txt)"
fi
ls -la .whl
du -sh .whl
