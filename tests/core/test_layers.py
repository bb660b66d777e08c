"""The house rules of raco_jax's imports, read from the source (no module is imported).

Layers, each importing only the ones below it (README, "Layout")::

    cli                          the command line
    demo, toy                    the built-in demo, the analytic toy benchmark
    sweep                        calls train, then evaluate
    evaluate                     judges, fronts, scoring saved runs
    train                        config, step, mesh, checkpoints, logs, the alignment run
    preference | data | models   independent of each other
    aggregation | objectives     the optax core

and: no import cycle between modules, no import of another module's private (underscore) name
or private module, and every internal import at the top of its module (local imports are kept
for optional third-party packages only).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "raco_jax"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("aggregation", "objectives"),
    ("preference", "data", "models"),
    ("train",),
    ("evaluate",),
    ("sweep",),
    ("demo", "toy"),
    ("cli",),
)
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str | None:
    """The layer part of a module (``raco_jax.train.step`` -> ``train``); None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


class _Import:
    def __init__(self, target: str, names: tuple[str, ...], line: int, top: bool) -> None:
        self.target, self.names, self.line, self.top = target, names, line, top


def _imports(path: pathlib.Path) -> list[_Import]:
    """Every import of a raco_jax module in the file (with the names taken and its place)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[_Import] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "raco_jax":
                        found.append(_Import(alias.name, (), child.lineno, top))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.split(".")[0] == "raco_jax":
                    names = tuple(a.name for a in child.names)
                    found.append(_Import(child.module, names, child.lineno, top))
            inner = isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            )
            visit(child, top and not inner)

    visit(tree, True)
    return found


IMPORTS = {module: _imports(path) for module, path in MODULES.items()}


def _targets(imp: _Import) -> list[str]:
    """The modules an import depends on: ``from P import sub`` of submodules depends on them
    (like ``import P.sub``: a parent package is initialised first either way, which is not a
    dependency on what it re-exports); any other ``from P import name`` depends on P."""
    subs = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in MODULES]
    if imp.names and len(subs) == len(imp.names):
        return subs
    return [imp.target, *subs]


def layer_violations(imports_by_module: dict[str, list[_Import]]) -> list[str]:
    wrong = []
    for module, imports in imports_by_module.items():
        part = _part(module)
        if part is None:  # the root re-exports the core (and loads the rest lazily)
            continue
        for imp in imports:
            for target in _targets(imp):
                other = _part(target)
                if other is None:  # the root package itself: only its version string
                    if not imp.names or set(imp.names) - {"__version__", *LAYER_OF}:
                        wrong.append(f"{module}:{imp.line} imports the package root")
                    continue
                if other != part and LAYER_OF.get(other, -1) >= LAYER_OF[part]:
                    wrong.append(f"{module}:{imp.line} ({part}) imports {target} ({other})")
    return wrong


def import_cycles(imports_by_module: dict[str, list[_Import]]) -> list[list[str]]:
    graph = {
        module: {t for imp in imports if imp.top for t in _targets(imp) if t in imports_by_module}
        for module, imports in imports_by_module.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            connect(module)
    return cycles


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_violations(imports_by_module: dict[str, list[_Import]]) -> list[str]:
    wrong = []
    for module, imports in imports_by_module.items():
        for imp in imports:
            private_names = [n for n in imp.names if _private(n)]
            if private_names:
                wrong.append(f"{module}:{imp.line} takes {private_names} from {imp.target}")
            parts = imp.target.split(".")
            for depth, piece in enumerate(parts):
                owner = ".".join(parts[:depth])
                if _private(piece) and not module.startswith(owner + "."):
                    wrong.append(f"{module}:{imp.line} imports the private module {imp.target}")
    return wrong


def local_violations(imports_by_module: dict[str, list[_Import]]) -> list[str]:
    return [
        f"{module}:{imp.line} imports {imp.target} inside a function or class"
        for module, imports in imports_by_module.items()
        for imp in imports
        if not imp.top
    ]


def test_the_package_is_found() -> None:
    assert {"raco_jax.train.step", "raco_jax.sweep", "raco_jax.cli"} <= set(MODULES)
    assert all(_part(m) in LAYER_OF for m in MODULES if m != "raco_jax"), [
        m for m in MODULES if m != "raco_jax" and _part(m) not in LAYER_OF
    ]


def test_imports_only_go_down_the_layers() -> None:
    wrong = layer_violations(IMPORTS)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    assert not import_cycles(IMPORTS)


def test_no_private_names_across_modules() -> None:
    wrong = private_violations(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_internal_imports_are_at_module_top() -> None:
    wrong = local_violations(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_what_they_are_for(tmp_path) -> None:
    """Not vacuous: modules breaking each rule are caught (and the clean package is not)."""

    def parsed(source: str) -> list[_Import]:
        path = tmp_path / "module.py"
        path.write_text(source)
        return _imports(path)

    upward = {"raco_jax.models.bad": parsed("from raco_jax.train import align\n")}
    assert layer_violations(upward) == [
        "raco_jax.models.bad:1 (models) imports raco_jax.train (train)"
    ]
    peer = {"raco_jax.data.bad": parsed("import raco_jax.models.lora\n")}
    assert len(layer_violations(peer)) == 1
    root = {"raco_jax.train.bad": parsed("import raco_jax\n")}
    assert len(layer_violations(root)) == 1
    cycle = {
        "raco_jax.data.a": parsed("from raco_jax.data.b import x\n"),
        "raco_jax.data.b": parsed("from raco_jax.data.a import y\n"),
    }
    assert import_cycles(cycle) == [["raco_jax.data.a", "raco_jax.data.b"]]
    private = {"raco_jax.train.bad": parsed("from raco_jax.models.hf_io import _resolve\n")}
    assert len(private_violations(private)) == 1
    hidden = {"raco_jax.train.bad": parsed("def f():\n    from raco_jax.data import pairs\n")}
    assert len(local_violations(hidden)) == 1
