"""The toy benchmark, full protocol: ``python3 benchmarks/toy.py [--output-dir DIR] [--quick]``.

A thin wrapper over ``raco-jax toy`` (:func:`raco_jax.toy.run_benchmark`): the CAGrad 2-D toy
from its three starts with Adam(lr=1e-3) for 100k steps (weighted sum, CAGrad, clipped CAGrad for
two weight vectors, MGDA, PCGrad), quadratic bowls and DTLZ2 with K = 3. Plots, a Markdown/CSV
table and a JSON dump go to ``benchmarks/out/toy`` by default.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raco_jax.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--output-dir" or a.startswith("--output-dir=") for a in argv):
        argv = [*argv, "--output-dir", str(ROOT / "benchmarks" / "out" / "toy")]
    sys.exit(main(["toy", *argv]))
