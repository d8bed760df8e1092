#!/usr/bin/env bash
# The device check, one prepared script for a lent GPU (nothing can be downloaded there).
# It runs the shared reference measurement and vlmcls's own throughput benchmarks in the same call,
# so that the figures are reported as ratios against the reference, not as absolute times.
#
#   here:   mkdir -p perf_local && cp ../shared/perf/gpu_reference.py perf_local/
#   device: bash scripts/gpu_check.sh     (run tool, carry ["perf_local"], output under $OUT)
set -uo pipefail
OUT=${OUT:-perf_local/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # no install: the device has no network for build deps
[ -n "$(ls perf_local/bitsandbytes-*.whl 2>/dev/null)" ] && pip install --quiet perf_local/bitsandbytes-*.whl
python perf_local/gpu_reference.py --parts qwen,bart,clip,resnet,pil > "$OUT/reference.jsonl" 2> "$OUT/reference.err"
# Full-size Qwen2-VL-2B, random weights: batch 1 vs batched, both prompt layouts, 20/100/1000-way.
python -m vlmcls.perf --arch qwen2-vl-2b --ways 20,100,1000 --batch-sizes 1,16,32 --layout thesis,labels-first \
  --quant none --out "$OUT/vlm.jsonl" > "$OUT/vlm.log" 2>&1
python -c "import bitsandbytes" 2>/dev/null && python -m vlmcls.perf --arch qwen2-vl-2b --ways 100 --batch-sizes 1,32 \
  --layout thesis --quant int8,nf4 --out "$OUT/vlm_quant.jsonl" > "$OUT/vlm_quant.log" 2>&1
python bench/perf_baselines.py --arch clip-vit-l-14 resnet-50 --workers 8 > "$OUT/baselines.jsonl" 2> "$OUT/baselines.err"
python -m pytest bench/test_micro_resolve.py -q -p no:cacheprovider --benchmark-json "$OUT/resolve.json" > "$OUT/resolve.log" 2>&1
tail -n 3 "$OUT"/*.log
