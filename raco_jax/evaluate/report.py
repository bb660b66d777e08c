"""Front reports: plots, tables, hypervolumes and a JSON summary of a weight sweep.

The input is a list of *results*, one per run (one method trained with one weight vector)::

    {"method": "raco", "weights": (0.7, 0.3),
     "scores": {"helpfulness": 0.61, "harmlessness": -0.02},   # higher is better
     "stderr": {"helpfulness": 0.01, "harmlessness": 0.003}}   # optional

(:func:`raco_jax.evaluate.judges.summarize_scores` gives the ``scores`` and ``stderr`` parts
from per-prompt judge scores.) :func:`write_front_report` writes, into one directory, a Pareto
plot (PNG), a table (CSV and Markdown), the hypervolume of every method's front with the stated
reference point and normalisation, and a JSON summary. Matplotlib is imported only inside
:func:`plot_fronts`, and draws with the Agg canvas directly (pyplot's global state is untouched).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raco_jax.evaluate.pareto import (
    HypervolumeResult,
    Maximize,
    hypervolume,
    orientation,
    pareto_front,
)

__all__ = [
    "FrontReport",
    "front_table",
    "method_hypervolumes",
    "plot_fronts",
    "write_front_report",
]


@dataclasses.dataclass(frozen=True)
class _Run:
    method: str
    weights: tuple[float, ...]
    scores: tuple[float, ...]
    stderr: tuple[float | None, ...]


def _finite_float(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a number; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} must be finite; got {value!r}")
    return number


def _parse_results(
    results: Sequence[Mapping[str, Any]], objectives: Sequence[str] | None
) -> tuple[list[_Run], tuple[str, ...]]:
    """Checks the results and returns them as runs, with the objectives in order."""
    if isinstance(results, Mapping) or not isinstance(results, Sequence) or not results:
        raise ValueError("results must be a non-empty list of {method, weights, scores} dicts")
    first_scores = results[0].get("scores") if isinstance(results[0], Mapping) else None
    if objectives is None:
        if not isinstance(first_scores, Mapping):
            raise ValueError("results[0]['scores'] must be a dict {objective: score}")
        names = tuple(first_scores)
        exact = True
    else:
        if isinstance(objectives, str):
            raise TypeError("objectives must be a list of names, not a single string")
        names = tuple(objectives)
        exact = False
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"a front needs at least 2 distinct objectives; got {list(names)}")
    runs = []
    num_weights = None
    for index, result in enumerate(results):
        where = f"results[{index}]"
        if not isinstance(result, Mapping):
            raise TypeError(f"{where} must be a dict; got {type(result).__name__}")
        for key in ("method", "weights", "scores"):
            if key not in result:
                raise ValueError(f"{where} lacks {key!r}; expected keys method, weights, scores")
        method = result["method"]
        if not isinstance(method, str) or not method:
            raise ValueError(f"{where}['method'] must be a non-empty string; got {method!r}")
        weights_raw = result["weights"]
        if isinstance(weights_raw, str | bytes) or not isinstance(weights_raw, Sequence):
            raise TypeError(f"{where}['weights'] must be a tuple of numbers; got {weights_raw!r}")
        weights = tuple(
            _finite_float(w, f"{where}['weights'][{i}]") for i, w in enumerate(weights_raw)
        )
        if num_weights is None:
            num_weights = len(weights)
        elif len(weights) != num_weights:
            raise ValueError(
                f"{where}['weights'] has {len(weights)} entries; results[0] has {num_weights}"
            )
        scores = result["scores"]
        if not isinstance(scores, Mapping):
            raise TypeError(f"{where}['scores'] must be a dict {{objective: score}}")
        missing = [name for name in names if name not in scores]
        extra = [name for name in scores if name not in names] if exact else []
        if missing or extra:
            raise ValueError(
                f"{where}['scores'] has objectives {list(scores)}; expected {list(names)} "
                f"(missing {missing}, unknown {extra})"
            )
        stderr_map = result.get("stderr") or {}
        if not isinstance(stderr_map, Mapping):
            raise TypeError(f"{where}['stderr'] must be a dict {{objective: standard error}}")
        unknown = [name for name in stderr_map if name not in scores]
        if unknown:
            raise ValueError(f"{where}['stderr'] has unknown objectives {unknown}")
        runs.append(
            _Run(
                method=method,
                weights=weights,
                scores=tuple(_finite_float(scores[n], f"{where}['scores'][{n!r}]") for n in names),
                stderr=tuple(
                    None
                    if stderr_map.get(n) is None
                    else _finite_float(stderr_map[n], f"{where}['stderr'][{n!r}]")
                    for n in names
                ),
            )
        )
    return runs, names


def _methods(runs: Sequence[_Run]) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))


def _weight_label(weights: Sequence[float]) -> str:
    return "/".join(f"{w:g}" for w in weights)


def _weight_columns(objectives: Sequence[str], num_weights: int) -> list[str]:
    if num_weights == len(objectives):
        return [f"weight_{name}" for name in objectives]
    return [f"weight_{i + 1}" for i in range(num_weights)]


def _flags(runs: Sequence[_Run], maximize: Maximize) -> tuple[list[bool], list[bool]]:
    """Per run: on its method's front, and on the front of all runs together."""
    points = np.array([run.scores for run in runs])
    overall = set(pareto_front(points, maximize).tolist())
    own = set()
    for method in _methods(runs):
        indices = [i for i, run in enumerate(runs) if run.method == method]
        own.update(indices[j] for j in pareto_front(points[indices], maximize).tolist())
    return [i in own for i in range(len(runs))], [i in overall for i in range(len(runs))]


def front_table(
    results: Sequence[Mapping[str, Any]],
    objectives: Sequence[str] | None = None,
    maximize: Maximize = True,
) -> list[dict[str, Any]]:
    """The results as flat table rows: method, weights, scores, standard errors, front flags.

    Weight columns are ``weight_<objective>`` when there is one weight per objective, else
    ``weight_1, weight_2, ...``. ``stderr_<objective>`` columns appear when any result has a
    standard error (``None`` where one is missing). ``on_method_front`` says whether the run is
    on its own method's Pareto front, ``on_overall_front`` whether it is on the front of all
    runs together.

    Args:
      results: ``[{"method", "weights", "scores", "stderr" (optional)}, ...]``.
      objectives: the objectives to report, in order (default: those of ``results[0]``; every
        result must then have exactly these).
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.

    Returns:
      One dict per result, in input order.

    Example:
      >>> rows = front_table([
      ...     {"method": "raco", "weights": (0.5, 0.5), "scores": {"a": 1.0, "b": 2.0}},
      ...     {"method": "dpo", "weights": (0.5, 0.5), "scores": {"a": 0.5, "b": 1.0}}])
      >>> rows[1]
      {'method': 'dpo', 'weight_a': 0.5, 'weight_b': 0.5, 'a': 0.5, 'b': 1.0, 'on_method_front': True, 'on_overall_front': False}
    """
    runs, names = _parse_results(results, objectives)
    return _rows(runs, names, maximize)


def _rows(runs: Sequence[_Run], names: Sequence[str], maximize: Maximize) -> list[dict[str, Any]]:
    weight_columns = _weight_columns(names, len(runs[0].weights))
    with_stderr = any(e is not None for run in runs for e in run.stderr)
    on_method, on_overall = _flags(runs, maximize)
    rows = []
    for index, run in enumerate(runs):
        row: dict[str, Any] = {"method": run.method}
        row.update(zip(weight_columns, run.weights, strict=True))
        row.update(zip(names, run.scores, strict=True))
        if with_stderr:
            row.update({f"stderr_{n}": e for n, e in zip(names, run.stderr, strict=True)})
        row["on_method_front"] = on_method[index]
        row["on_overall_front"] = on_overall[index]
        rows.append(row)
    return rows


def method_hypervolumes(
    results: Sequence[Mapping[str, Any]],
    reference: Sequence[float],
    *,
    objectives: Sequence[str] | None = None,
    maximize: Maximize = True,
    normalize: Any = None,
) -> dict[str, HypervolumeResult]:
    """The exact hypervolume of each method's runs (see :func:`~raco_jax.evaluate.pareto.hypervolume`).

    Args:
      results: ``[{"method", "weights", "scores", ...}, ...]``.
      reference: the reference point, one value per objective (in score units).
      objectives: the objectives, in the order of ``reference`` (default: those of
        ``results[0]``).
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.
      normalize: ``None`` or ``(low, high)`` per objective (scalars or vectors).

    Returns:
      ``{method: HypervolumeResult}`` in order of first appearance.

    Example:
      >>> hvs = method_hypervolumes(
      ...     [{"method": "raco", "weights": (1, 0), "scores": {"a": 2.0, "b": 1.0}},
      ...      {"method": "raco", "weights": (0, 1), "scores": {"a": 1.0, "b": 2.0}}],
      ...     reference=(0.0, 0.0))
      >>> float(hvs["raco"])
      3.0
    """
    runs, names = _parse_results(results, objectives)
    return _hypervolumes(runs, names, reference, maximize, normalize)


def _hypervolumes(
    runs: Sequence[_Run],
    names: Sequence[str],
    reference: Sequence[float],
    maximize: Maximize,
    normalize: Any,
) -> dict[str, HypervolumeResult]:
    reference_arr = np.asarray(reference, dtype=np.float64)
    if reference_arr.shape != (len(names),):
        raise ValueError(
            f"reference must have one value per objective {list(names)}; got {reference!r}"
        )
    return {
        method: hypervolume(
            [run.scores for run in runs if run.method == method],
            reference_arr,
            maximize=maximize,
            normalize=normalize,
        )
        for method in _methods(runs)
    }


def plot_fronts(
    results: Sequence[Mapping[str, Any]],
    path: str | pathlib.Path,
    *,
    objectives: Sequence[str] | None = None,
    maximize: Maximize = True,
    reference: Sequence[float] | None = None,
    hypervolumes: Mapping[str, float] | None = None,
    title: str | None = None,
    dpi: int = 120,
    reference_label: str = "reference point",
) -> pathlib.Path:
    """Draws every method's front and saves it as a PNG.

    Two objectives give one panel (first objective on x); more give one panel per pair of
    objectives. In each panel every method is one line through its runs, sorted along the
    x axis (along the front), with error bars where the results carry standard errors. The runs
    of one weight vector (one per method) are joined by a faint grey line and labelled ONCE with
    the weights (``0.7/0.3``), so labels of nearby points do not pile up; labels near the right
    edge are written to the left of their point. The reference point, if given, is drawn as a
    black cross named ``reference_label`` in the legend; hypervolumes, if given, are shown
    there too.

    Args:
      results: ``[{"method", "weights", "scores", "stderr" (optional)}, ...]``.
      path: where to write the PNG (parent directories are created).
      objectives: the objectives, in order (default: those of ``results[0]``).
      maximize: ``True`` (higher is better), ``False``, or one flag per objective; used in the
        axis labels.
      reference: the reference point to draw, or ``None``.
      hypervolumes: ``{method: value}`` for the legend, or ``None``.
      title: the figure title, or ``None``.
      dpi: the PNG resolution.
      reference_label: the legend entry of the reference point (say what it is: e.g. the base
        model, when the hypervolumes in the legend are measured against another point).

    Returns:
      The path of the PNG.

    Example:
      >>> import pathlib, tempfile
      >>> results = [{"method": "raco", "weights": (w, 1 - w), "scores": {"a": w, "b": 1 - w * w}}
      ...            for w in (0.2, 0.5, 0.8)]
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     png = plot_fronts(results, pathlib.Path(tmp) / "front.png", reference=(0, 0))
      ...     png.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
      True
    """
    runs, names = _parse_results(results, objectives)
    return _plot(runs, names, path, maximize, reference, hypervolumes, title, dpi, reference_label)


def _label_weights(ax: Any, runs: Sequence[_Run], i: int, j: int) -> None:
    """One label per weight vector, at the top of its runs (joined by a faint line)."""
    xs = [run.scores[i] for run in runs]
    x_low, x_high = min(xs), max(xs)
    span = (x_high - x_low) or 1.0
    groups: dict[tuple[float, ...], list[_Run]] = {}
    for run in runs:
        groups.setdefault(tuple(round(float(w), 6) for w in run.weights), []).append(run)
    for weights, members in groups.items():
        members = sorted(members, key=lambda run: run.scores[j])
        if len(members) > 1:
            ax.plot(
                [run.scores[i] for run in members], [run.scores[j] for run in members],
                color="grey", alpha=0.35, linewidth=0.8, zorder=0,
            )  # fmt: skip
        top = members[-1]
        right = top.scores[i] > x_high - 0.2 * span
        ax.annotate(
            _weight_label(weights),
            (top.scores[i], top.scores[j]),
            textcoords="offset points",
            xytext=(-5, 5) if right else (5, 5),
            ha="right" if right else "left",
            fontsize=7,
            color="0.25",
        )


def _plot(
    runs: Sequence[_Run],
    names: Sequence[str],
    path: str | pathlib.Path,
    maximize: Maximize,
    reference: Sequence[float] | None,
    hypervolumes: Mapping[str, float] | None,
    title: str | None,
    dpi: int,
    reference_label: str = "reference point",
) -> pathlib.Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    signs = orientation(maximize, len(names))
    pairs = list(itertools.combinations(range(len(names)), 2))
    num_cols = min(3, len(pairs))
    num_rows = math.ceil(len(pairs) / num_cols)
    figure = Figure(figsize=(5.0 * num_cols, 4.2 * num_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(_methods(runs)))]
    for ax, (i, j) in zip(axes, pairs, strict=False):
        for color, method in zip(colors, _methods(runs), strict=True):
            own = [run for run in runs if run.method == method]
            own.sort(key=lambda run: (run.scores[i], run.scores[j]))
            x = np.array([run.scores[i] for run in own])
            y = np.array([run.scores[j] for run in own])
            label = method
            if hypervolumes is not None and method in hypervolumes:
                label = f"{method} (HV {float(hypervolumes[method]):.4g})"
            ax.plot(x, y, "o-", color=color, label=label, markersize=5, linewidth=1.5)
            xerr = [run.stderr[i] or 0.0 for run in own]
            yerr = [run.stderr[j] or 0.0 for run in own]
            if any(xerr) or any(yerr):
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.5)
        _label_weights(ax, runs, i, j)
        if reference is not None:
            ax.plot(
                [float(reference[i])], [float(reference[j])], "kx", markersize=8,
                label=reference_label,
            )  # fmt: skip
        arrows = ["higher is better" if s > 0 else "lower is better" for s in signs]
        ax.set_xlabel(f"{names[i]} ({arrows[i]})")
        ax.set_ylabel(f"{names[j]} ({arrows[j]})")
        ax.grid(True, alpha=0.3)
        ax.margins(0.1)
        ax.legend(fontsize=8)
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi, format="png")
    return out


@dataclasses.dataclass(frozen=True)
class FrontReport:
    """What :func:`write_front_report` wrote and measured.

    Attributes:
      paths: ``{"plot", "csv", "markdown", "json"}`` -> file path.
      hypervolumes: ``{method: hypervolume}`` (floats, in normalised units when normalising).
      details: ``{method: HypervolumeResult}`` with the reference and normalisation stated.
      objectives: the objectives, in order.
      reference: the reference point, in score units.
      normalize: ``((low...), (high...))`` or ``None``.

    Example:
      >>> report = FrontReport({}, {"raco": 1.0}, {}, ("a", "b"), (0.0, 0.0), None)
      >>> report.hypervolumes["raco"]
      1.0
    """

    paths: dict[str, pathlib.Path]
    hypervolumes: dict[str, float]
    details: dict[str, HypervolumeResult]
    objectives: tuple[str, ...]
    reference: tuple[float, ...]
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _markdown(
    rows: list[dict[str, Any]],
    names: Sequence[str],
    details: Mapping[str, HypervolumeResult],
    title: str | None,
) -> str:
    columns = [c for c in rows[0] if not c.startswith("stderr_")]
    lines = [f"# {title or 'Pareto fronts'}", "", "## Scores per method and weights", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        cells = []
        for column in columns:
            cell = _fmt(row[column])
            error = row.get(f"stderr_{column}")
            if column in names and error is not None:
                cell += f" ± {error:.2g}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(details.values()))
    lines += ["", "## Hypervolume per method", ""]
    lines.append(f"Reference point: {dict(zip(names, first.reference, strict=True))}.")
    if first.normalize is None:
        lines.append("Normalisation: none (raw score units).")
    else:
        low, high = first.normalize
        bounds = {n: [lo, hi] for n, lo, hi in zip(names, low, high, strict=True)}
        lines.append(f"Normalisation: (x - low) / (high - low) with [low, high] = {bounds}.")
    directions = ["max" if m else "min" for m in first.maximize]
    lines.append(f"Directions: {dict(zip(names, directions, strict=True))}.")
    lines += ["", "| method | hypervolume | runs | runs dominating the reference |"]
    lines.append("| --- | --- | --- | --- |")
    for method, result in details.items():
        lines.append(
            f"| {method} | {result.value:.6g} | {result.num_points} | {result.num_contributing} |"
        )
    return "\n".join(lines) + "\n"


def write_front_report(
    results: Sequence[Mapping[str, Any]],
    directory: str | pathlib.Path,
    *,
    reference: Sequence[float],
    objectives: Sequence[str] | None = None,
    maximize: Maximize = True,
    normalize: Any = None,
    title: str | None = None,
    prefix: str = "front",
) -> FrontReport:
    """Writes the plot, tables, hypervolumes and JSON summary of a sweep into ``directory``.

    Files (``<prefix>`` defaults to ``front``): ``<prefix>.png`` (see :func:`plot_fronts`),
    ``<prefix>.csv`` and ``<prefix>.md`` (the rows of :func:`front_table`; the Markdown adds
    the hypervolume table with the reference point and normalisation), ``<prefix>.json``
    (objectives, directions, reference, normalisation, hypervolume per method with details,
    the results with their front flags, and the file names).

    Args:
      results: ``[{"method", "weights", "scores", "stderr" (optional)}, ...]``.
      directory: the output directory (created if missing).
      reference: the hypervolume reference point, one value per objective, in score units.
      objectives: the objectives, in order (default: those of ``results[0]``).
      maximize: ``True`` (higher is better), ``False``, or one flag per objective.
      normalize: ``None`` or ``(low, high)`` per objective, applied before measuring volumes.
      title: a title for the plot and the Markdown.
      prefix: the file name stem.

    Returns:
      A :class:`FrontReport` with the paths and the hypervolumes.

    Example:
      >>> import json, tempfile
      >>> results = [
      ...     {"method": "raco", "weights": (0.8, 0.2), "scores": {"helpful": 0.75, "harmless": 0.25}},
      ...     {"method": "raco", "weights": (0.2, 0.8), "scores": {"helpful": 0.25, "harmless": 0.75}},
      ...     {"method": "dpo", "weights": (0.5, 0.5), "scores": {"helpful": 0.5, "harmless": 0.5}}]
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...     report = write_front_report(results, tmp, reference=(0.0, 0.0))
      ...     summary = json.loads(report.paths["json"].read_text())
      >>> report.hypervolumes
      {'raco': 0.3125, 'dpo': 0.25}
      >>> summary["reference"], sorted(report.paths)
      ([0.0, 0.0], ['csv', 'json', 'markdown', 'plot'])
    """
    runs, names = _parse_results(results, objectives)
    details = _hypervolumes(runs, names, reference, maximize, normalize)
    hypervolumes = {method: float(result.value) for method, result in details.items()}
    rows = _rows(runs, names, maximize)
    out_dir = pathlib.Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "plot": out_dir / f"{prefix}.png",
        "csv": out_dir / f"{prefix}.csv",
        "markdown": out_dir / f"{prefix}.md",
        "json": out_dir / f"{prefix}.json",
    }
    _plot(runs, names, paths["plot"], maximize, reference, hypervolumes, title, 120)
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["markdown"].write_text(_markdown(rows, names, details, title))
    first = next(iter(details.values()))
    summary = {
        "title": title,
        "objectives": list(names),
        "maximize": list(first.maximize),
        "reference": list(first.reference),
        "normalize": first.to_dict()["normalize"],
        "hypervolume": hypervolumes,
        "hypervolume_details": {method: r.to_dict() for method, r in details.items()},
        "results": [
            {
                "method": run.method,
                "weights": list(run.weights),
                "scores": dict(zip(names, run.scores, strict=True)),
                "stderr": {n: e for n, e in zip(names, run.stderr, strict=True) if e is not None},
                "on_method_front": row["on_method_front"],
                "on_overall_front": row["on_overall_front"],
            }
            for run, row in zip(runs, rows, strict=True)
        ],
        "files": {kind: path.name for kind, path in paths.items()},
    }
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return FrontReport(
        paths=paths,
        hypervolumes=hypervolumes,
        details=details,
        objectives=tuple(names),
        reference=first.reference,
        normalize=first.normalize,
    )
