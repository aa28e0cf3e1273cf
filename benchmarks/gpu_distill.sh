#!/usr/bin/env bash
# Distil the SmolLM2 draft on a lent GPU (issue 7), then re-run the CUDA exactness tests (issue 3).
#
# The machine has no network and takes at most 64 MiB per call, so the embedded model's GGUF file
# (98 MB) travels in two calls: the first leaves .carry/gguf_a/part00 in /root/ggpart, the second
# carries .carry/gguf_b/part01 and runs this script. Wheels for loguru and gguf come in .carry/whl.
#   call 1: mkdir -p /root/ggpart && cp .carry/gguf_a/part00 /root/ggpart/
#   call 2: bash benchmarks/gpu_distill.sh
# Writes to $OUT: distill.log, draft_config.json, draft.part00/01 (the safetensors file split in
# two, under the 16 MiB per-file limit; `cat` them back together), exact.log.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 AUTOSPEC_CACHE=/root/cache AUTOSPEC_SMOLLM2_GGUF_DIR=/root/gguf
started=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile .carry/whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
mkdir -p /root/gguf
cat /root/ggpart/part00 .carry/gguf_b/part01 > /root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /root/gguf/SmolLM2-135M-Instruct.Q4_1.gguf | tee $OUT/distill.log
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a $OUT/distill.log
# DISTILL_ARGS: a small run to check this script on a CPU, e.g.
#   DISTILL_ARGS="--device cpu --tokens 300 --samples 0 --new-tokens 8 --epochs 1 --batch-size 8 --eval-tokens 4"
args=${DISTILL_ARGS:-"--device cuda --tokens 1000000 --samples 24 --new-tokens 128 --epochs 8 --batch-size 64 --eval-tokens 64 --serve-batch-size 256"}
(cd /tmp && timeout ${DISTILL_TIMEOUT_S:-400} python3 -m autospec.entrypoints.cli distill --dtype bfloat16 --out /root/draft \
    --layers 4 --vocab-size 8192 --lr 5e-4 --time-budget ${TRAIN_BUDGET_S:-150} --checkpoint-every 100000 $args) \
    2>&1 | tr '\r' '\n' | awk '!/%\|/ || /100%\|/' | tail -n 60 >> $OUT/distill.log
cp /root/draft/draft_config.json $OUT/ 2>/dev/null
split -b 15000000 -d /root/draft/draft.safetensors $OUT/draft.part 2>/dev/null
echo "distill done after $(( $(date +%s) - started )) s" | tee -a $OUT/distill.log
left=$(( ${CALL_LIMIT_S:-560} - ($(date +%s) - started) ))
if [ "$left" -gt 90 ]; then
    timeout $((left - 15)) python3 -m pytest -q tests/backends/test_hf_exact.py -k cuda 2>&1 | tail -n 5 > $OUT/exact.log
fi
