"""Plots of the toy benchmark (matplotlib, imported inside each function)."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from raco_jax.toy.problems import (
    cagrad_toy_losses,
    cagrad_toy_pareto_set,
)
from raco_jax.toy.trajectory import Trajectory

__all__ = ["plot_bowls", "plot_cagrad_toy", "plot_dtlz2"]


def plot_cagrad_toy(
    trajectories: Mapping[str, Trajectory],
    targets: Mapping[str, Any] | None = None,
    path: str | pathlib.Path | None = None,
    ncols: int = 4,
) -> Any:
    """Plots CAGrad-toy trajectories, one panel per method, over the mean loss's contours.

    Each panel shows the contours of ``(L1 + L2) / 2``, the Pareto set (black curve), the
    trajectory from every start (a circle marks the start, a cross the end) and, when given,
    the method's target point (a star).

    Args:
      trajectories: ``{method label: Trajectory}`` on :func:`cagrad_toy`.
      targets: optional ``{method label: (x1, x2)}`` (e.g. the weighted-loss minimiser).
      path: optional file to save the figure to (PNG, ...).
      ncols: panels per row.

    Returns:
      The matplotlib ``Figure``.

    Example:
      >>> import matplotlib
      >>> matplotlib.use("Agg")
      >>> import optax, raco_jax
      >>> from raco_jax import toy
      >>> tx = optax.chain(raco_jax.clipped_cagrad(weights=(0.8, 0.2), c=0.4), optax.adam(0.1))
      >>> traj = toy.run(toy.cagrad_toy(), tx, toy.CAGRAD_TOY_STARTS, steps=200, record_every=50)
      >>> target = toy.cagrad_toy_weighted_minimizer((0.8, 0.2))
      >>> fig = toy.plot_cagrad_toy({"clipped_cagrad": traj}, {"clipped_cagrad": target})
      >>> len(fig.axes)
      1
    """
    import matplotlib.pyplot as plt

    targets = dict(targets or {})
    names = list(trajectories)
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False, sharex=True, sharey=True
    )
    grid = np.linspace(-10.0, 10.0, 201, dtype=np.float32)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=-1))
    mean_loss = np.asarray(jnp.mean(jax.vmap(cagrad_toy_losses)(points), axis=-1)).reshape(xx.shape)
    pareto = cagrad_toy_pareto_set(201)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.contourf(xx, yy, mean_loss, levels=30, cmap="Greys", alpha=0.55)
        ax.plot(pareto[:, 0], pareto[:, 1], color="black", lw=2.5, label="Pareto set")
        params = np.asarray(trajectories[name].params)
        for s in range(params.shape[0]):
            color = colors[s % len(colors)]
            ax.plot(params[s, :, 0], params[s, :, 1], color=color, lw=1.3)
            ax.plot(*params[s, 0], "o", color=color, ms=5)
            ax.plot(*params[s, -1], "X", color=color, ms=7, mec="black", mew=0.6)
        if targets.get(name) is not None:
            ax.plot(*np.asarray(targets[name]), "*", color="gold", ms=14, mec="black", mew=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
    for ax in axes[-1]:
        ax.set_xlabel("x1")
    for ax in axes[:, 0]:
        ax.set_ylabel("x2")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _plot_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
    ax: Any,
) -> None:
    for name, (steps, values) in curves.items():
        values = np.maximum(np.asarray(values, np.float64), 1e-12)
        line = ax.plot(steps, np.median(values, axis=0), lw=1.6, label=name)[0]
        for row in values:
            ax.plot(steps, row, lw=0.6, alpha=0.35, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def plot_bowls(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: pathlib.Path) -> None:
    """Plots the Pareto-stationarity residual on the quadratic bowls per method (log scale).

    Args:
        curves: method -> ``(steps [T], residuals [S, T])`` over S starts.
        path: the PNG file to write.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from raco_jax.toy import plot_bowls
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "bowls.png"
        >>> plot_bowls({"mgda": (np.arange(3), np.ones((2, 3)))}, path)
        >>> path.is_file()
        True
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _plot_curves(
        curves,
        "Pareto-stationarity residual (= distance to hull)",
        "Quadratic bowls: median over starts (thin: each start)",
        ax,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dtlz2(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    final_losses: Mapping[str, np.ndarray],
    path: pathlib.Path,
) -> None:
    """Plots DTLZ2's distance to the front per method and the final losses on the sphere.

    Args:
        curves: method -> ``(steps [T], g [S, T])`` over S starts.
        final_losses: method -> ``[S, 3]`` final loss vectors.
        path: the PNG file to write.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from raco_jax.toy import plot_dtlz2
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "dtlz2.png"
        >>> plot_dtlz2({"mgda": (np.arange(3), np.ones((2, 3)))}, {"mgda": np.eye(3)[:2]}, path)
        >>> path.is_file()
        True
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    _plot_curves(curves, "distance to the front (||L|| - 1 = g)", "DTLZ2 (K = 3)", ax)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    u, v = np.meshgrid(np.linspace(0, np.pi / 2, 25), np.linspace(0, np.pi / 2, 25))
    ax3.plot_wireframe(
        np.cos(u) * np.cos(v), np.cos(u) * np.sin(v), np.sin(u), color="grey", lw=0.4, alpha=0.6
    )
    for name, losses in final_losses.items():
        losses = np.asarray(losses)
        ax3.scatter(losses[:, 0], losses[:, 1], losses[:, 2], s=22, label=name)
    ax3.set_xlabel("L1")
    ax3.set_ylabel("L2")
    ax3.set_zlabel("L3")
    ax3.set_title("final losses and the front (colours as on the left)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
