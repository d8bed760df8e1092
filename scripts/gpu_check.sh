#!/usr/bin/env bash
# The device check: one prepared script for a lent GPU (nothing can be downloaded there). Each
# measuring script times a bf16 matmul peak in its own process, so figures come as MFU / ratios.
#   device: STEPS="vlm rank" bash scripts/gpu_check.sh   (~6.5 min on an H100)
#           STEPS="nli quant" bash scripts/gpu_check.sh  (~4 min; quant needs perf_local/wheels carried)
# Output under $OUT (at most 8 files come back: this writes env.txt and one .log per step, the JSON rows
# among its lines), and the key fields of every row printed at the end.
set -uo pipefail
OUT=${OUT:-perf_local/out}
STEPS=${STEPS-vlm rank nli quant}  # STEPS="" only prints what $OUT holds
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # no install: the device has no network for build deps
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/env.txt"
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step NAME SECONDS command...: its output (JSON rows, progress, errors) in NAME.log
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  echo "$name rc=$? ($(date +%T))"
}
ARCH=${ARCH:-qwen2-vl-2b}  # a dry run here: ARCH=smoke-qwen2-vl BATCH=4 IMAGES=8 NLI_ARGS="--tiny --device cpu"
PERF=(python -m vlmcls.perf --arch "$ARCH" --quant none)
# 1. #12: full-size random Qwen2-VL-2B, bf16. Batch 1 (the x-b1 baseline, same call) and batch 128 with
#    the dynamic vs the static KV cache (catalog option static_cache: transformers compiles the decode
#    step; the first batch of each row pays the compile in the warm-up). 20- and 100-way, study layout.
if has vlm; then
  step vlm "${VLM1_S:-90}" "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes 1
  step vlm "${VLM2_S:-330}" "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes "${BATCH:-128}" \
    --cache dynamic,static --images "${IMAGES:-256}"
fi
# 2. #18: ranking mode (all candidates as one token tree per image) vs generate, 20/100-way
if has rank; then
  step rank "${RANK_S:-120}" "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes "${RANK_BATCH:-16}" \
    --resolver generate,rank --images "${RANK_IMAGES:-32}"
fi
# 3. #13: a VLM + NLI case with --nli-overlap off vs on (100-way; every answer to NLI)
if has nli; then
  step nli "${NLI_S:-150}" python bench/perf_nli.py --overlap ${NLI_ARGS:-}
fi
# 4. #12: int8 / nf4 (bitsandbytes, carried as a wheel: carry perf_local/wheels) against bf16, same call
if has quant; then
  ls perf_local/wheels/bitsandbytes-*.whl >/dev/null 2>&1 \
    && pip install --quiet --no-deps --no-index perf_local/wheels/bitsandbytes-*.whl >> "$OUT/quant.log" 2>&1
  step quant "${QUANT_S:-200}" python -m vlmcls.perf --arch "$ARCH" --quant none,int8,nf4 --ways 100 \
    --layout image-first --batch-sizes "${QBATCH:-32}" --images "${QIMAGES:-64}"
fi
python - "$OUT" <<'PY'
import json, sys, pathlib
keys = ("part", "ways", "layout", "quant", "cache", "batch_size", "effective_batch_size", "images_per_s", "mfu",
        "speedup_vs_b1", "speedup_vs_dynamic", "cost_vs_bf16", "generate_share", "decode_ms_per_step", "rank_cost_vs_generate", "rank_path", "s_per_answer", "agreement",
        "speedup", "hidden", "same_predictions", "faster", "peak_tflops", "notes")
bf16 = {}  # int8 / nf4 rows: bf16 img/s of the same call, ways and batch size -> cost_vs_bf16
b1 = {}  # (ways, layout) -> batch-1 img/s: the batch-1 rows come from a separate invocation of the same call
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.log")):
    for line in f.read_text().splitlines():
        if not line.startswith("{"): continue
        try: r = json.loads(line)
        except ValueError: continue
        if r.get("part") == "hf_vlm_generate" and r.get("batch_size") == 1 and r.get("cache") == "dynamic":
            b1[(r["ways"], r["layout"])] = r["images_per_s"]
        elif r.get("part") == "hf_vlm_generate" and r.get("speedup_vs_b1") is None and (r["ways"], r["layout"]) in b1:
            r["speedup_vs_b1"] = round(r["images_per_s"] / b1[(r["ways"], r["layout"])], 2)
        if r.get("part") == "hf_vlm_generate" and r.get("quant") == "none":
            bf16[(f.stem, r["ways"], r["batch_size"], r.get("cache"))] = r["images_per_s"]
        elif r.get("part") == "hf_vlm_generate" and (f.stem, r["ways"], r["batch_size"], r.get("cache")) in bf16:
            r["cost_vs_bf16"] = round(bf16[(f.stem, r["ways"], r["batch_size"], r.get("cache"))] / r["images_per_s"], 2)
        print(f.stem, {k: r[k] for k in keys if k in r} or r)
PY
grep -h -v "^{" "$OUT"/*.log 2>/dev/null | grep -v "Loading weights" | tail -n 8 | cut -c1-300
