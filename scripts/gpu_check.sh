#!/usr/bin/env bash
# The device check: one prepared script for a lent GPU (nothing can be downloaded there). Each
# measuring script times a bf16 matmul peak in its own process, so figures come as MFU / ratios.
#   device: bash scripts/gpu_check.sh   (output under $OUT; at most 8 files come back)
set -uo pipefail
OUT=${OUT:-perf_local/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # no install: the device has no network for build deps
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/env.txt"
# 1. hf-vlm: full-size random Qwen2-VL-2B, batch 1 vs 32 vs auto, both layouts, 20/100/1000-way (#12)
timeout "${VLM_S:-230}" python -m vlmcls.perf --arch qwen2-vl-2b --ways 20,100,1000 --layout thesis,labels-first \
  --batch-sizes 1,32,auto --images "${IMAGES:-128}" --quant none --out "$OUT/vlm.jsonl" > "$OUT/vlm.log" 2>&1
echo "vlm rc=$?"
# 2. NLI resolver: full-size random BART-large-MNLI, s per answer and fp32/half agreement (#13)
timeout "${NLI_S:-90}" python bench/perf_nli.py --device cuda --ways 20,100,1000 > "$OUT/nli.jsonl" 2> "$OUT/nli.err"
echo "nli rc=$?"
# 3. Baselines end to end, GPU JPEG decode vs the processor path (#14)
[ -n "${BASELINES:-}" ] && timeout 120 python bench/perf_baselines.py --arch resnet-50 clip-vit-l-14 \
  --path processor gpu > "$OUT/baselines.jsonl" 2> "$OUT/baselines.err"
python - "$OUT" <<'PY'
import json, sys, pathlib
keys = ("part", "ways", "layout", "batch_size", "effective_batch_size", "images_per_s", "mfu", "speedup_vs_b1",
        "speedup_vs_image_first", "s_per_answer", "agreement", "peak_tflops", "path", "of_encode", "notes")
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    for line in f.read_text().splitlines():
        try: r = json.loads(line)
        except ValueError: continue
        print(f.stem, {k: r[k] for k in keys if k in r} or r)
PY
tail -n 4 "$OUT"/*.log "$OUT"/*.err 2>/dev/null | cut -c1-300
