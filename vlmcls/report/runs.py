"""Stored runs read back: a run folder is what the plugin writes, `results.json` = {"meta": ...,
"cases": [row, ...]} and `samples/<case_id>.jsonl` = one Prediction per line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from ..types import Prediction

_PRED_FIELDS = {f.name for f in fields(Prediction)}


class RunError(ValueError):
    """A run folder that cannot be read; the message is one line meant for the user."""


# ---------------------------------------------------------------------------------- stored runs
@dataclass(frozen=True)
class Run:
    path: Path
    meta: dict
    rows: list[dict]

    @property
    def name(self) -> str:
        return str(self.path)

    def samples_path(self, case_id: str) -> Path | None:
        # case ids come from a file: never let one walk out of samples/ ("../x").
        if Path(case_id).name != case_id or case_id.startswith("."):
            return None
        return self.path / "samples" / f"{case_id}.jsonl"

    def predictions(self, case_id: str) -> list[Prediction] | None:
        path = self.samples_path(case_id)
        return load_samples(path) if path is not None and path.is_file() else None


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} not found")
    file = path / "results.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} holds no results.json: not a vlmcls run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {file}: {_one_line(exc)}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(r, dict) and "case_id" in r for r in cases):
        raise RunError(f"{file} is not a vlmcls results file (no 'cases' list of rows)")
    return Run(path, dict(data.get("meta") or {}), cases)


def recorded_baseline(run: Run) -> Path | None:
    """The baseline the run recorded (`pytest --baseline`, `vlmcls report --baseline`), None without one:
    its absolute path while it is there, else the path from the run folder (`baseline_relative`), which
    still finds it after the reports folder was moved or unpacked elsewhere; a gone one by its absolute
    path (the caller says it is gone)."""
    absolute, relative = run.meta.get("baseline"), run.meta.get("baseline_relative")
    moved = (run.path / str(relative)).resolve() if relative else None
    if absolute and Path(absolute).is_dir() or moved is None or not moved.is_dir():
        return Path(absolute) if absolute else moved
    return moved


# ---------------------------------------------------------------------------------- the run's catalog
def catalog_meta(path: str | Path | None, base: str | Path = ".") -> dict[str, Any]:
    """What results.json's meta records of the catalog a run used: `catalog`, its absolute path (None:
    the bundled one), and `catalog_sha256`, so a re-render follows it and can tell it changed since."""
    if not path:
        return {"catalog": None}
    file = (Path(base) / path).resolve()
    try:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"catalog": str(file), "catalog_sha256": digest}


def recorded_catalog(run: Run) -> Path | None:
    """The catalog file the run was made with, None for the bundled one. Runs that recorded no
    `catalog` (before it was recorded) are read from their command line's `--catalog FILE`, relative
    to the folder pytest ran in, which is the reports folder's parent by default; the path returned
    may not exist (the caller says so)."""
    if "catalog" in run.meta:
        return Path(run.meta["catalog"]) if run.meta["catalog"] else None
    given = _argv_value(run.meta.get("argv") or [], "--catalog")
    if not given:
        return None
    tries = [Path(given)] if Path(given).is_absolute() else [run.path.parent.parent / given, Path(given)]
    return next((p for p in tries if p.is_file()), tries[0]).resolve()


def catalog_changed(run: Run, path: Path) -> bool:
    """Whether the catalog file differs from the one the run recorded (False when no digest was recorded)."""
    recorded = run.meta.get("catalog_sha256")
    if not recorded:
        return False
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() != recorded
    except OSError:
        return False


def _argv_value(argv: Any, option: str) -> str | None:
    """The value of `--option VALUE` or `--option=VALUE` in a recorded command line (the last one wins)."""
    value = None
    args = [str(a) for a in argv] if isinstance(argv, list) else []
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def load_samples(path: str | Path) -> list[Prediction]:
    """Predictions of one case's JSONL; unknown keys (a newer writer) are ignored."""
    preds = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    preds.append(_prediction(json.loads(line)))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"cannot read {path}: {_one_line(exc)}") from None
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}:{number}: not a prediction record ({_one_line(exc)})") from None
    return preds


def _prediction(record: Mapping[str, Any]) -> Prediction:
    data = {k: v for k, v in record.items() if k in _PRED_FIELDS}
    data["candidates"] = tuple(data.get("candidates") or ())
    return Prediction(**data)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def pred_field(pred: Any, key: str) -> Any:
    """A field of a Prediction or of its JSON dict: gates hold objects, tools hold dicts."""
    return pred.get(key) if isinstance(pred, Mapping) else getattr(pred, key)
