"""scripts/gpu_check.sh's summary (STEPS="": it only reads $OUT): the ratios it prints come from rows of
separate invocations of the same call, and they are what the README's figures are copied from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def _row(**fields) -> str:
    return json.dumps({**dict(part="hf_vlm_generate", layout="image-first", quant="none", cache="dynamic"), **fields})


def _summary(out: Path) -> list[str]:
    env = dict(os.environ, STEPS="", OUT=str(out), PY=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_summary_computes_x_batch_1_and_cost_vs_bf16_across_invocations(tmp_path):
    (tmp_path / "vlm.log").write_text("\n".join([
        "$ python -m vlmcls.perf ... --batch-sizes 1 (limit 100s)",
        _row(ways=20, batch_size=1, images_per_s=2.0, speedup_vs_b1=1.0),
        _row(ways=100, batch_size=1, images_per_s=1.6, speedup_vs_b1=1.0),
        "Loading weights: 100%",
        _row(ways=20, batch_size=128, images_per_s=50.0, speedup_vs_b1=None),
        json.dumps(dict(part="profile", ways=20, batch_size=128, cache="dynamic", wall_s=2.5, busy_share=0.61,
                        host_ops_share=0.3, device_top=[dict(name="sm90_xmma_gemm_bf16", share=0.4, calls=900)],
                        host_top=[dict(name="aten::mm", share=0.1, calls=900)])),
        _row(ways=20, batch_size=128, cache="static", images_per_s=80.0, speedup_vs_b1=None, speedup_vs_dynamic=1.6),
        _row(ways=100, batch_size=128, images_per_s=40.0, speedup_vs_b1=None),
        "skipped: python -m vlmcls.perf --ways 1000 (needs ~70s, 20s left)",
    ]) + "\n")
    (tmp_path / "quant.log").write_text("\n".join([
        _row(ways=100, batch_size=32, images_per_s=30.0),
        _row(ways=100, batch_size=32, quant="int8", images_per_s=7.5),
        _row(ways=100, batch_size=32, quant="nf4", images_per_s=20.0),
    ]) + "\n")
    lines = _summary(tmp_path)
    rows = [line for line in lines if line.startswith(("vlm {", "quant {"))]
    b128 = [r for r in rows if "'batch_size': 128" in r]
    assert "'speedup_vs_b1': 25.0" in b128[0] and "'speedup_vs_b1': 40.0" in b128[1]  # 50/2 and static 80/2
    assert "'speedup_vs_b1': 25.0" in b128[2]  # 100-way: 40/1.6
    quant = [r for r in rows if r.startswith("quant")]
    assert "cost_vs_bf16" not in quant[0]
    assert "'cost_vs_bf16': 4.0" in quant[1] and "'cost_vs_bf16': 1.5" in quant[2]
    profile = next(line for line in lines if line.startswith("   profile"))
    assert "'busy_share': 0.61" in profile and "sm90_xmma_gemm_bf16" in profile and "aten::mm" in profile
    assert any(line.startswith("skipped: python -m vlmcls.perf --ways 1000") for line in lines)  # the tail shows it
