"""Serial against `-n 2` wall time of the offline smoke run (a benchmark that prints, not a test).

    python bench/perf_xdist.py                     # pytest bench -k smoke --samples 300 --ways 100
    python bench/perf_xdist.py --samples 64 --ways 20

Each run gets its own report folder and --refresh, so neither is answered from the other's store.
Goal: on 2 cores `-n 2` is not slower than serial (each worker gets cores / workers torch threads).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(args: list[str], report_dir: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", "bench/test_classify.py", "-p", "no:cacheprovider", "-q", "--refresh",
           "--report-dir", str(report_dir), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="smoke")
    parser.add_argument("--samples", default="300")
    parser.add_argument("--ways", default="100")
    opt = parser.parse_args()
    common = ["-k", opt.k, "--samples", opt.samples, "--ways", opt.ways]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        serial, rc1 = wall(common, Path(tmp, "serial"))
        parallel, rc2 = wall(common + ["-n", "2"], Path(tmp, "xdist"))
    print(f"cores {cores}; pytest bench {' '.join(common)}")
    print(f"serial  {serial:7.1f} s (exit {rc1})")
    print(f"-n 2    {parallel:7.1f} s (exit {rc2})  ratio {parallel / serial:.2f} (goal <= 1.0 on 2 cores)")


if __name__ == "__main__":
    main()
