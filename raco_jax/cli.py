"""The ``raco-jax`` command line.

One sub-command per task; each is registered by a ``_add_<name>(subparsers)`` function that
declares its arguments and sets ``handler``, a function ``(args) -> exit status``. Handlers
import what they need lazily (plotting, models, data), so ``raco-jax --help`` stays fast.

Sub-commands:

* ``raco-jax toy [--quick] [--output-dir DIR]``: the analytic toy benchmark
  (:func:`raco_jax.toy.run_benchmark`): trajectory plots, a Markdown/CSV table and a JSON dump.
* ``raco-jax align [--config FILE] [--preset NAME] [flags]``: one alignment run
  (:func:`raco_jax.train.align.align`); every :class:`~raco_jax.train.config.AlignConfig` field
  is a flag (``--learning-rate``, ``--mesh 1,-1,1``, ...). Prints the summary and where the
  final model is.
* ``raco-jax sweep [align flags] (--grid N | --weights-grid W;W;...) [--methods a,b]
  [--judge SPEC ...]``: one run per method and weight vector, resumable, then the evaluation
  and the Pareto front (:func:`raco_jax.train.sweep.run_sweep`).
* ``raco-jax evaluate --runs DIR [DIR ...] --data FILES --judge SPEC ...``: the evaluation
  and front of saved runs (:func:`raco_jax.train.sweep.evaluate_runs`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]

DEFAULT_TOY_OUTPUT_DIR = "raco_jax_toy"


def _cmd_toy(args: argparse.Namespace) -> int:
    from raco_jax import toy

    log = None if args.silent else print
    results = toy.run_benchmark(args.output_dir, quick=args.quick, plots=not args.no_plots, log=log)
    if log is not None:
        print(
            f"\n{'Quick' if args.quick else 'Full'} toy benchmark done in "
            f"{results['wall_time_s']:.1f} s. Summary (CAGrad toy, max over the 3 starts):"
        )
        for label, entry in results["cagrad_toy"].items():
            dists = [d for d in entry["distance_to_target"] if d is not None]
            to_target = f"{max(dists):.1e}" if dists else "  -    "
            print(
                f"  {label:36s} distance to target {to_target}   to Pareto set "
                f"{max(entry['distance_to_pareto_set']):.1e}"
            )
    print("Files written:")
    for name, path in results["files"].items():
        print(f"  {name:20s} {path}")
    return 0


def _add_toy(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "toy",
        help="run the analytic toy benchmark (CAGrad 2-D toy, quadratic bowls, DTLZ2)",
        description=(
            "Runs every aggregator (weighted sum, CAGrad, clipped CAGrad, MGDA, PCGrad) on the "
            "CAGrad paper's 2-D toy (Adam, 3 starts), quadratic bowls and DTLZ2, and writes "
            "trajectory plots (PNG), a table (Markdown and CSV) and the results (JSON)."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced protocol (40k Adam steps at lr 5e-3 instead of 100k at 1e-3 on the 2-D toy)",
    )
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_TOY_OUTPUT_DIR,
        help=f"where to write the plots and tables (default: ./{DEFAULT_TOY_OUTPUT_DIR})",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--silent", action="store_true", help="print only the written files")
    parser.set_defaults(handler=_cmd_toy)


def _run_failure(err: BaseException) -> int:
    """Prints a run's failure as one clear message; returns the exit status."""
    from raco_jax.train.logs import describe_failure

    message = str(err) if isinstance(err, (ValueError, MemoryError)) else describe_failure(err)
    notes = getattr(err, "__notes__", None)
    if notes:
        message = "\n".join([message, *notes])
    print(f"raco-jax: error: {message}", file=sys.stderr)
    return 2 if isinstance(err, ValueError) else 1


def _cmd_align(args: argparse.Namespace) -> int:
    from raco_jax.train.align import align
    from raco_jax.train.config import config_from_args
    from raco_jax.train.logs import NonFiniteLossError

    try:
        config = config_from_args(args)
        result = align(config, progress=not args.quiet)
    except (ValueError, MemoryError, NonFiniteLossError, FileNotFoundError) as err:
        return _run_failure(err)
    print(f"final model: {result.final_dir}")
    print(f"checkpoints: {result.checkpoint_dir}")
    return 0


def _add_align(subparsers: argparse._SubParsersAction) -> None:
    from raco_jax.train.config import add_config_flags

    parser = subparsers.add_parser(
        "align",
        help="align a model on multi-objective preference pairs (RACO and baselines)",
        description=(
            "Runs one alignment run: loads the model and the preference data, trains with the "
            "chosen method (raco: clipped CAGrad over one DPO loss per objective), checkpoints, "
            "evaluates, and exports the aligned model to <output-dir>/final in Hugging Face "
            "layout. Settings come from --preset, then --config FILE (YAML or TOML), then flags."
        ),
    )
    add_config_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary text")
    parser.set_defaults(handler=_cmd_align)


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    from raco_jax.train.sweep import add_sweep_parser

    add_sweep_parser(subparsers)


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    from raco_jax.train.sweep import add_evaluate_parser

    add_evaluate_parser(subparsers)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    from raco_jax.demo.run import add_demo_parser

    add_demo_parser(subparsers)


_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_toy,
    _add_align,
    _add_sweep,
    _add_evaluate,
)


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``raco-jax`` argument parser with every registered sub-command.

    Returns:
      The ``argparse.ArgumentParser``; ``parse_args`` yields a namespace whose ``handler``
      runs the chosen sub-command.

    Example:
      >>> from raco_jax.cli import build_parser
      >>> args = build_parser().parse_args(["toy", "--quick", "--output-dir", "out"])
      >>> args.command, args.quick, args.output_dir
      ('toy', True, 'out')
    """
    from raco_jax import __version__

    parser = argparse.ArgumentParser(
        prog="raco-jax",
        description="RACO in JAX: reward-free alignment for conflicting objectives.",
    )
    parser.add_argument("--version", action="version", version=f"raco-jax {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raco-jax`` console script.

    Args:
      argv: the arguments (without the program name); ``None`` reads ``sys.argv[1:]``.

    Returns:
      The exit status (0 on success). Argument errors exit with status 2 (argparse).

    Example:
      >>> from raco_jax.cli import main
      >>> import contextlib, io
      >>> with contextlib.redirect_stdout(io.StringIO()) as out:
      ...     try:
      ...         main(["--help"])
      ...     except SystemExit as e:
      ...         status = e.code
      >>> status, "toy" in out.getvalue()
      (0, True)
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
