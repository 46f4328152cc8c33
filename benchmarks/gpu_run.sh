#!/usr/bin/env bash
# One prepared GPU latency run: python -m benchmarks.latency on every CUDA backend for ViT-B-16 and ViT-B-32,
# for a GPU machine that has PyTorch with CUDA but no route to a package index.
#
#   benchmarks/gpu_run.sh OUT_DIR [WHEEL_DIR]
#
# WHEEL_DIR: wheels of what that machine lacks (typically open_clip_torch, ftfy, wcwidth), installed
# with --no-index --no-deps into a private folder. The repository's own packages are installed the same
# way, so nothing of the machine's Python changes. Results: OUT_DIR/<model>/results.{md,json,csv} and
# latency.png. Overrides: MODELS="ViT-B-16 ViT-B-32", BACKENDS='*/*/cuda', LATENCY_ARGS="--warmup 5 ...".
set -euo pipefail
out=$(realpath -m "${1:?usage: benchmarks/gpu_run.sh OUT_DIR [WHEEL_DIR]}")
wheels=${2:+$(realpath "$2")}
site=$(mktemp -d "${TMPDIR:-/tmp}/semobridge-site.XXXXXX")
cd "$(dirname "$0")/.."

pip_install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$@"; }
if [ -n "$wheels" ]; then pip_install "$wheels"/*.whl; fi
pip_install --no-build-isolation . ./runtime
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv || true
for model in ${MODELS:-ViT-B-16 ViT-B-32}; do
    # shellcheck disable=SC2086  # LATENCY_ARGS is a list of flags
    python3 -m benchmarks.latency --model "$model" --backends "${BACKENDS:-*/*/cuda}" --out "$out/$model" \
        ${LATENCY_ARGS:---warmup 5 --iters 100 --budget 2}
done
