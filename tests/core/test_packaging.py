"""Import cost, lint and formatting: project habits checked by the test command."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_pulls_in_only_jax_and_optax() -> None:
    code = (
        "import sys, raco_jax\n"
        "names = [raco_jax.clipped_cagrad, raco_jax.cagrad, raco_jax.weighted_sum, raco_jax.mgda,\n"
        "         raco_jax.pcgrad, raco_jax.gram_matrix, raco_jax.combine,\n"
        "         raco_jax.cagrad_coefficients, raco_jax.objective_grads,\n"
        "         raco_jax.value_and_objective_grads, raco_jax.accumulate_objectives]\n"
        "import raco_jax.aggregation\n"
        "heavy = [m for m in ('flax', 'transformers', 'datasets', 'torch', 'safetensors')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "", f"import raco_jax pulled in: {out.stdout.strip()}"


@pytest.mark.skipif(
    shutil.which("ruff") is None and sys.modules.get("ruff") is None, reason="ruff missing"
)
@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "."], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
