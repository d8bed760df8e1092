#!/usr/bin/env bash
# The device check: ONE call on a lent GPU (nothing can be downloaded there), within a time budget.
#   bash scripts/gpu_check.sh   (about 9 min: give the whole call ~570 s; the int8/nf4 step installs the
#   bitsandbytes wheel from perf_local/wheels when the machine cannot download it, so bring that folder)
# Steps run in priority order; a step whose estimate no longer fits BUDGET (seconds, default 530) is
# skipped and says so, and each runs under `timeout` with what is left, so the summary always prints.
# Each measuring script times a bf16 matmul peak in its own process: figures come as MFU and ratios.
# At most 8 files come back from $OUT: this writes env.txt and one .log per group (vlm, nli, lf, quant,
# rank), the JSON rows among their lines; the key fields of every row are printed at the end.
# Dry run on a CPU (~7 min on 2 cores, 2 of them compiling BART-large; NLI_COMPILE=off skips that): ARCH=smoke-qwen2-vl BATCH=4 IMAGES=8 LF_IMAGES=8 RANK_BATCH=2 RANK_IMAGES=4 \
#   QBATCH=2 QIMAGES=4 NLI_WAYS=20 NLI_ARGS="--device cpu --answers 2" OVERLAP_ARGS="--tiny --device cpu" \
#   bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-perf_local/out}
BUDGET=${BUDGET:-530}
STEPS=${STEPS-vlm nli lf overlap quant rank}  # STEPS="" only prints what $OUT holds
PY=${PY:-$(command -v python3 || command -v python)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # no install: no network for build deps
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} | tee "$OUT/env.txt"
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() {  # step LOG ESTIMATE LIMIT command...: runs if the estimate fits what is left of the budget
  local log=$1 estimate=$2 limit=$3 left=$((BUDGET - SECONDS)); shift 3
  if (( estimate > left )); then echo "skipped: $* (needs ~${estimate}s, ${left}s left)" | tee -a "$OUT/$log.log"; return; fi
  (( limit > left )) && limit=$left
  echo "\$ $* (limit ${limit}s)" >> "$OUT/$log.log"
  timeout "$limit" "$@" >> "$OUT/$log.log" 2>&1
  echo "$log rc=$? at ${SECONDS}s" | tee -a "$OUT/$log.log"
}
ARCH=${ARCH:-qwen2-vl-2b}
PERF=("$PY" -m vlmcls.perf --arch "$ARCH" --quant none)
NLI=("$PY" bench/perf_nli.py)
# 1. #12: full-size random Qwen2-VL-2B, bf16, study layout. Batch 1 (the x-b1 baseline), then batch 128
#    with the dynamic vs the static KV cache (catalog option static_cache: transformers compiles the
#    decode step; the warm-up pays the compile) and the next batches prepared in the backend's thread or
#    in a process of its own (--prefetch 2,2p: does the thread, sharing the GIL, slow a host-bound
#    generate? overlap_slowdown says it too), each batched dynamic-cache thread row with one batch profiled.
if has vlm; then
  step vlm 60 100 "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes 1
  step vlm 260 330 "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes "${BATCH:-128}" \
    --cache dynamic,static --prefetch "${PREFETCH:-2,2p}" --images "${IMAGES:-256}" --profile
fi
# 2. #13: NLI s/answer at 100 and 1000 candidates (target <= 0.01 / 0.06 s on an H100), the model
#    uncompiled and through torch.compile (--nli-compile; the first call pays the compile), and bf16 vs fp32
if has nli; then
  step nli 130 200 "${NLI[@]}" --ways "${NLI_WAYS:-100,1000}" --compile "${NLI_COMPILE:-both}" --skip per_answer ${NLI_ARGS:-}
fi
# 3. #12: 1000-way labels-first (the label list's KV cache shared), batch auto (target MFU >= 25 %)
if has lf; then
  step lf 70 120 "${PERF[@]}" --ways 1000 --layout labels-first --batch-sizes auto --images "${LF_IMAGES:-256}" --profile
fi
# 4. #13: a VLM + NLI case with --nli-overlap off vs on (100-way; every answer to NLI): which is faster
if has overlap; then step nli 90 120 "${NLI[@]}" --overlap ${OVERLAP_ARGS:-}; fi
# 5. #12: int8 / nf4 (bitsandbytes, carried as a wheel: carry perf_local/wheels) against bf16, same call
if has quant; then
  ls perf_local/wheels/bitsandbytes-*.whl >/dev/null 2>&1 \
    && "$PY" -m pip install --quiet --no-deps --no-index perf_local/wheels/bitsandbytes-*.whl >> "$OUT/quant.log" 2>&1
  step quant 150 200 "$PY" -m vlmcls.perf --arch "$ARCH" --quant none,int8,nf4 --ways 100 \
    --layout image-first --batch-sizes "${QBATCH:-32}" --images "${QIMAGES:-64}"
fi
# 6. #18: ranking mode (all candidates as one token tree per image) vs generate, 20/100-way
if has rank; then
  step rank 100 130 "${PERF[@]}" --ways 20,100 --layout image-first --batch-sizes "${RANK_BATCH:-16}" \
    --resolver generate,rank --images "${RANK_IMAGES:-32}"
fi
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
keys = ("part", "ways", "layout", "quant", "cache", "batch_size", "effective_batch_size", "images_per_s", "mfu",
        "prefetch", "speedup_vs_b1", "speedup_vs_dynamic", "speedup_vs_prefetch_default", "cost_vs_bf16",
        "generate_share", "decode_ms_per_step",
        "decode_ms_per_step_alone", "overlap_slowdown",
        "rank_cost_vs_generate", "rank_path", "answers", "dtype", "compile", "s_per_answer", "passes", "target_s",
        "first_call_s", "speedup_vs_eager", "equal_decisions_vs_eager",
        "equal_decisions", "fp32_s_per_answer", "worst_gap_of_differing", "speedup", "hidden",
        "same_predictions", "faster", "peak_tflops", "notes", "error")
bf16 = {}  # int8 / nf4 rows: bf16 img/s of the same call, ways and batch size -> cost_vs_bf16
b1 = {}  # (ways, layout) -> batch-1 img/s: the batch-1 rows come from a separate invocation of the same call
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.log")):
    for line in f.read_text().splitlines():
        if not line.startswith("{"): continue
        try: r = json.loads(line)
        except ValueError: continue
        vlm = r.get("part") == "hf_vlm_generate"
        if vlm and r.get("batch_size") == 1 and r.get("cache") == "dynamic":
            b1[(r["ways"], r["layout"])] = r["images_per_s"]
        elif vlm and r.get("speedup_vs_b1") is None and (r["ways"], r["layout"]) in b1:
            r["speedup_vs_b1"] = round(r["images_per_s"] / b1[(r["ways"], r["layout"])], 2)
        where = (f.stem, r.get("ways"), r.get("batch_size"), r.get("cache"))
        if vlm and r.get("quant") == "none":
            bf16[where] = r["images_per_s"]
        elif vlm and where in bf16:
            r["cost_vs_bf16"] = round(bf16[where] / r["images_per_s"], 2)
        if r.get("part") == "profile":  # where one more batch of the row above went
            top = lambda ops: [(o["name"][:48], o["share"]) for o in ops[:4]]
            print("   profile", {k: r[k] for k in ("wall_s", "busy_share", "host_ops_share", "error") if k in r},
                  "device:", top(r.get("device_top", [])), "host:", top(r.get("host_top", [])))
            continue
        print(f.stem, {k: r[k] for k in keys if k in r} or r)
PY
grep -h -v "^{" "$OUT"/*.log 2>/dev/null | grep -v "Loading weights\|Writing model\|^\\$ \| rc=0 " | tail -n 8 | cut -c1-300
