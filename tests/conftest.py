"""Test-wide settings: offline Hugging Face, 8 simulated CPU devices, compilation cache.

These environment variables must be set before JAX (or datasets/transformers) is imported.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "RACO_JAX_TEST_CACHE", str(pathlib.Path.home() / ".cache" / "raco_jax_test_jit")
    ),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The ../shared folder beside the clone (real data); skips when a user's clone lacks it."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared not found beside the clone ({SHARED_DIR}); real-data tests skipped")
    return SHARED_DIR


# CI runs a fixed, reproducible set of hypothesis examples; local runs keep exploring new ones.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
