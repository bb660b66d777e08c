"""Loading the benchmarks/ scripts in tests.

benchmarks/ is kept off sys.path: its models.py would shadow the namespace package tests/models.
Each script is loaded from its file and registered in ``sys.modules`` under its own name, which
dataclasses need (they resolve string annotations through the module) and which lets the scripts
import each other by name (``from preference_sweep import ...``).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

REPO = pathlib.Path(__file__).resolve().parents[1]


def load(*names: str) -> ModuleType:
    """Loads benchmarks/<name>.py for each name in order (dependencies first); returns the last."""
    for name in names:
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    return sys.modules[names[-1]]
