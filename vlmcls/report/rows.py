"""Case rows: one JSON-safe dict per case (`case_row`, `skipped_row`), whatever its outcome.

Workers send rows, the controller renders them; a row is read back from results.json by `runs`.
"""
from __future__ import annotations

import json
from dataclasses import fields

from .. import calibration
from ..settings import redact_urls, redact_values
from ..vocab import NLI_RESOLVERS

ERROR_CHARS = 200  # the first error message kept in a row (the full ones are in the samples file)
# The messages of images.ImageError, which the runner stores as an unreadable image's error row
# (runner._decode_one): the data's fault, kept apart from backend errors.
INPUT_ERROR_PREFIXES = ("image file not found", "cannot decode image", "cannot convert image", "image too large to decode")
INPUT_ERRORS_LISTED = 20


def is_input_error(error: str | None) -> bool:
    return error is not None and error.startswith(INPUT_ERROR_PREFIXES)


def case_row(result, *, status: str, threshold: float | None, reason: str = "", spent_now: float | None = None) -> dict:
    """A JSON-safe summary of one case (from runner.CaseResult). `spent_now`: USD paid by this run
    (the rest of `cost_usd` was paid by earlier runs whose answers came from the store).
    Cost and tokens count every answer paid for: with --orders K, all K orders' (`predictions` and the
    metrics are order 0 only), as `spent_now` and --max-cost do."""
    spec, m = result.spec, result.metrics
    preds = result.predictions
    paid = getattr(result, "order_rows", None) or preds
    errors = [p.error for p in preds if p.error is not None and not is_input_error(p.error)]
    unreadable = [p for p in preds if is_input_error(p.error)]
    return {
        **spec_fields(spec),
        # answers from vlmcls's stub server (runner.CaseResult.stand_in) are a stand-in's, whatever the catalog says
        **({"smoke": True} if getattr(result, "stand_in", False) else {}),
        "status": status, "reason": reason, "threshold": threshold,
        "metrics": m.as_dict() if m else None,
        "images_per_s": result.images_per_s,
        # rounded: a sum of 1/n shares leaves 0.9999999999999999 in results.json
        "stages": {k: round(v, 6) for k, v in result.stage_shares().items()},
        "errors": len(errors) + len(unreadable), "first_error": errors[0][:ERROR_CHARS] if errors else None,
        "input_errors": len(unreadable),
        "input_error_files": [{"sample_id": p.sample_id, "error": p.error[:ERROR_CHARS]} for p in unreadable[:INPUT_ERRORS_LISTED]],
        "ambiguous": sum(p.ambiguous for p in preds),
        "resumed": result.resumed, "not_run": result.not_run, "stopped": result.stopped,
        "cost_usd": sum(p.cost_usd or 0.0 for p in paid) if any(p.cost_usd is not None for p in paid) else None,
        "cost_now_usd": spent_now,
        "tokens": {"prompt": sum(p.prompt_tokens or 0 for p in paid), "completion": sum(p.completion_tokens or 0 for p in paid)},
        "mean_latency_s": (sum(p.latency_s for p in preds) / len(preds)) if preds else None,
        "resolver_s": {k: round(v, 4) for k, v in sorted(result.stage_seconds.items())},
        "wall_s": result.wall_s,
        "notes": list(result.notes),
        "revisions": revisions(spec), "ran_on": getattr(result, "ran_on", None),
        "calibration": calibration.summary(preds),  # top-5, ECE, reliability: None without scores
        **order_fields(result),
    }


def spec_fields(spec) -> dict:
    e = spec.model
    device = spec.settings.device
    # a prompt sweep's rows differ only in their prompt: the model column (the tag) says which ran
    tag = e.case_tag(spec.settings.quant) + (f" [{spec.prompt_id}]" if spec.prompt_id else "")
    return {
        "case_id": spec.case_id, "tag": tag, "model": e.name, "backend": e.backend, "weights": e.weights, "smoke": e.smoke,
        "ways": spec.ways, "quant": spec.settings.quant if e.info.quantized else None,
        "layout": spec.settings.layout, "dataset": spec.dataset, "samples": spec.samples, "seed": spec.seed,
        "prompt": spec.prompt_name, **prompt_fields(spec), "labels": spec.labels_mode, "resolver": spec.resolver,
        # a digest of the class names the prompt showed, where a user can change them (an own dataset's folders
        # or column, --label-names); None: the built-in names. Runs that differ here asked different questions.
        "label_names": getattr(spec, "label_digest", "") or None,
        "reference": e.reference.get(spec.ways), "trust_remote_code": bool(e.trust_remote_code and spec.settings.trust_remote_code),
        "device_kind": "cuda" if device.startswith("cuda") else device,
        # the NLI model only where the resolver can call it (as the store's key): `exact` and `rank` runs
        # that differ in --nli-model alone ran alike, and the report must not call their settings different
        "nli_model": spec.nli_model if spec.resolver in NLI_RESOLVERS else None, "settings": _settings(spec.settings),
    }


def revisions(spec) -> dict:
    """The hub commit of the model's and the NLI model's weights as cached when the case ended, or for a
    local folder `files:<hash>` of its files (hub.folder_files; None: a smoke model, a served model, or no
    NLI stage)."""
    from .. import hub

    def one(weights):
        return (hub.revision(weights) or hub.folder_files(weights)) if weights else None

    nli = spec.nli_model if spec.resolver in NLI_RESOLVERS else None
    return {"weights": one(spec.model.weights) if spec.model.info.local else None, "nli_model": one(nli)}


def prompt_fields(spec) -> dict:
    """The prompt's text, so that results.json says what was asked even after a built-in's wording
    changes in a later release; a prompt file's path too."""
    t = spec.template
    return {"prompt_text": t.text} if t.path is None else {"prompt_text": t.text, "prompt_file": t.path}


def _settings(settings) -> dict:
    """Every effective setting, for reproducing the case; `extra` (catalog options) made JSON-safe."""
    plain = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "extra"}
    if plain.get("base_url"):  # the servers, without credentials a URL may carry
        plain["base_url"] = redact_urls(plain["base_url"])
    # a catalog's `options` are kept in `extra` too, `base_url` (and its credentials) included
    return {**plain, "extra": json.loads(json.dumps(redact_values(settings.extra), default=str))}


def skipped_row(spec, status: str, reason: str) -> dict:
    return {**spec_fields(spec), "status": status, "reason": reason, "metrics": None, "stages": {}, "notes": []}


def order_fields(result) -> dict:
    """--orders K > 1: the order statistics (vlmcls.orders) for the row; nothing for K=1 (rows as before)."""
    if not getattr(result, "order_rows", None):
        return {}
    from ..orders import summary

    return {"orders": summary(result.order_rows, result.spec.orders, result.spec.ways)}
