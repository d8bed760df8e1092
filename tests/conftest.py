"""Test-wide setup: offline hub, a temporary HF_HOME, and one shared folder of tiny smoke models."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports huggingface_hub / datasets: they read these at import time.
_TMP = Path(tempfile.mkdtemp(prefix="vlmcls-tests-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_TMP / "hf_home")
os.environ.setdefault("VLMCLS_SMOKE_DIR", str(_TMP / "smoke"))
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def smoke_model():
    """Path of a tiny random-weight model, built once per test session: smoke_model("qwen2-vl")."""
    from vlmcls.smoke import ensure

    return ensure
