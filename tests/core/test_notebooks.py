"""Every notebook in notebooks/ executes top to bottom, and is committed without outputs.

Each notebook runs in a fresh ``python3`` kernel (nbclient) started from the repository root,
with matplotlib's Agg backend; the kernel inherits this process's environment (CPU JAX, see
conftest.py) and its persistent compilation cache. Notebook 01 takes about 20-30 s on a 2-core
CPU with a cold cache. A notebook that reads the outputs of a benchmark names them in its
metadata (``"raco_jax": {"requires": [paths]}``) and is skipped, with the reason, where they are
absent (CI's clean clone): notebooks/03_hh_rlhf.ipynb runs after ``benchmarks/hh_rlhf.py``.
"""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 240

nbformat = pytest.importorskip("nbformat")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_saved_without_outputs(path: pathlib.Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has saved outputs (clear them)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import jax

    cache_dir = jax.config.jax_compilation_cache_dir  # share conftest.py's compilation cache
    if cache_dir:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache_dir))
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    nb = nbformat.read(path, as_version=4)
    missing = [
        p for p in nb.metadata.get("raco_jax", {}).get("requires", []) if not (ROOT / p).exists()
    ]
    if missing:
        pytest.skip(f"{path.name} reads benchmark outputs that are absent: {missing}")
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
