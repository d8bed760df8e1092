"""Where a run's figures came from: date, package versions, git commit, machine (CPU / GPU names).

Written into results.json's meta and rendered as report.md's last section, so a figure read months
later can be traced to the code and hardware that produced it. Cheap and torch-free: versions come
from package metadata, the GPU name from torch only if the run already imported it, else nvidia-smi.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

# the models' libraries, and those the metrics and their intervals come from
PACKAGES = ("vlmcls", "torch", "transformers", "scikit-learn", "scipy", "numpy")
FIELDS = ("date", *PACKAGES, "python", "git_commit", "cpu", "gpu")
OPTIONAL = ("git_diff",)  # shown only when there is one


def collect() -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    commit = git_commit(here)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "git_commit": commit,
        **({"git_diff": git_diff(here)} if commit and commit.endswith("-dirty") else {}),
        "cpu": cpu_name(),
        "gpu": gpu_name(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def git_commit(where: Path) -> str | None:
    """The checkout's commit (+ "-dirty" with uncommitted changes); None for an installed wheel."""
    if shutil.which("git") is None:
        return None
    return _run(["git", "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"], cwd=where)


def git_diff(where: Path) -> str | None:
    """A "-dirty" commit says only that something changed: the SHA-256 (first 12 digits) of `git diff
    HEAD` tells two dirty runs of one commit apart, and matches a diff kept beside the results."""
    import hashlib

    try:
        out = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=where, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(out.stdout).hexdigest()[:12] if out.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """Names of the visible GPUs, comma separated; None without one."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            return None
        except Exception:  # a broken driver must not cost the report
            return None
    if shutil.which("nvidia-smi") is None:
        return None
    names = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return ", ".join(names.splitlines()) if names else None


def weights_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which weights each model ran with, and their revision where one is known (the hub commit, or a
    local folder's `files:` hash): a report comparing two checkpoints says which is which."""
    from .report import cell

    from .hub import short_revision

    seen: dict[tuple, str] = {}  # each (model, weights, revision) once: two checkpoints of one name both shown
    for row in rows:
        model, weights = row.get("model"), row.get("weights")
        rev = (row.get("revisions") or {}).get("weights")
        if not model or not weights or row.get("metrics") is None or (model, weights, rev) in seen:
            continue
        seen[model, weights, rev] = f"{cell(model)} = {cell(weights)}" + (f" @ {cell(short_revision(rev))}" if rev else "")
    return f"- weights: {'; '.join(seen.values())}" if seen else ""


def markdown(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """report.md's provenance section: this run's, or one line per merged source run, and the weights each
    model ran with."""
    from .report import cell

    sources = [(s.get("run_id") or s.get("path"), s.get("provenance")) for s in meta.get("merged_from") or ()]
    own = meta.get("provenance")
    if not own and not any(p for _, p in sources):
        return ""
    lines = ["## Provenance", ""]
    if weights := weights_line(rows):
        lines.append(weights)
    if own:
        missing = {"gpu": "none visible"}
        lines += [f"- {key.replace('_', ' ')}: {cell(own[key] if own.get(key) is not None else missing.get(key, 'unknown'))}"
                  for key in FIELDS + tuple(k for k in OPTIONAL if own.get(k))]
    for run_id, prov in sources:
        if prov:
            line = ", ".join(f"{k.replace('_', ' ')} {cell(prov.get(k))}" for k in FIELDS + OPTIONAL if prov.get(k) is not None)
            lines.append(f"- run {cell(run_id)}: {line}")
    return "\n".join(lines)
