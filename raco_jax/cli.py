"""The ``raco-jax`` command line: every sub-command's parser and handler, one error mapping.

Sub-commands (each registered by an ``_add_<name>(subparsers)`` function that declares its
arguments and sets ``handler``, a function ``(args) -> exit status``):

* ``raco-jax demo [--quick] [--output-dir DIR] [--seed N] [--objectives 2|3]``: the built-in
  offline demo (:func:`raco_jax.demo.run_demo`).
* ``raco-jax toy [--quick] [--output-dir DIR]``: the analytic toy benchmark
  (:func:`raco_jax.toy.run_benchmark`).
* ``raco-jax align [--config FILE] [--preset NAME] [flags]``: one alignment run
  (:func:`raco_jax.align`); every :class:`~raco_jax.train.config.AlignConfig` field is a flag
  (``--learning-rate``, ``--mesh 1,-1,1``, ...), documented by ``raco-jax align --help``.
* ``raco-jax sweep [align flags] (--grid N | --weights-grid W;W;...) [--methods a,b]
  [--judge SPEC ...]``: one run per method and weight vector, resumable, then the evaluation
  and the Pareto front (:func:`raco_jax.sweep.run_sweep`).
* ``raco-jax evaluate --runs DIR [DIR ...] (--data-dir PAIRS | --data FILES --judge SPEC ...)``:
  saved runs scored on preference pairs (:func:`raco_jax.evaluate.evaluate_preference_runs`) or
  by judges on their responses (:func:`raco_jax.evaluate.evaluate_runs`).
* ``raco-jax launch --num-processes N [--devices-per-process D] -- COMMAND ...``: one run as N
  JAX processes on this machine (:func:`raco_jax.train.distributed.launch`).

Errors: a bad input (``ValueError``, a missing file) prints one line ``raco-jax: error: ...``
and exits with status 2, like argparse's own errors; a run that stops on a NaN or out of memory
prints its message and exits with 1; Ctrl-C says how to resume and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from raco_jax import __version__, toy
from raco_jax.demo import DEFAULT_OUTPUT_DIR as DEFAULT_DEMO_OUTPUT_DIR
from raco_jax.demo import run_demo
from raco_jax.evaluate import evaluate_preference_runs, evaluate_runs, held_out_prompts
from raco_jax.sweep import parse_weights_grid, run_sweep, simplex_grid
from raco_jax.train import align, config_from_args
from raco_jax.train.config import add_config_flags
from raco_jax.train.distributed import launch
from raco_jax.train.failures import NonFiniteLossError, describe_failure

__all__ = ["build_parser", "main"]

DEFAULT_TOY_OUTPUT_DIR = "raco_jax_toy"


# -- the one error mapping --------------------------------------------------------------------


def _report_failure(err: BaseException) -> int:
    """Prints a failure as ``raco-jax: error: ...`` on stderr; returns the exit status."""
    if isinstance(err, KeyboardInterrupt):
        message, status = describe_failure(err), 130
    elif isinstance(err, NonFiniteLossError):
        notes = getattr(err, "__notes__", None)
        message, status = ("\n".join(notes) if notes else describe_failure(err)), 1
    elif isinstance(err, MemoryError):
        message, status = str(err) or describe_failure(err), 1
    else:  # ValueError, FileNotFoundError: the input is wrong
        message, status = str(err), 2
    print(f"raco-jax: error: {message}", file=sys.stderr)
    return status


_REPORTED = (ValueError, FileNotFoundError, MemoryError, NonFiniteLossError, KeyboardInterrupt)


# -- demo and toy ------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    result = run_demo(
        args.output_dir,
        quick=args.quick,
        seed=args.seed,
        num_objectives=args.objectives,
        progress=not args.no_progress,
    )
    print(result["summary"])
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the built-in offline demo: align a tiny model on a synthetic task and plot fronts",
        description=(
            "Pretrains a tiny decoder on a synthetic prompt -> response language, samples "
            "preference pairs labelled by exact judges (informativeness vs brevity, plus safety "
            "with --objectives 3), aligns it with RACO (clipped CAGrad), DPO-LW (weighted sum) "
            "and unclipped CAGrad over a grid of weights, and writes a Pareto plot (PNG), tables "
            "(Markdown, CSV), hypervolumes and the run configuration (JSON) into --output-dir. "
            "Fully offline; a few minutes on a CPU (--quick: about one)."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced settings (about a minute on a CPU)"
    )
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_DEMO_OUTPUT_DIR,
        help=f"where to write the report (default: ./{DEFAULT_DEMO_OUTPUT_DIR})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--objectives",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: informativeness vs brevity (default); 3: also safety",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_toy(args: argparse.Namespace) -> int:
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


# -- align and sweep ---------------------------------------------------------------------------


def _cmd_align(args: argparse.Namespace) -> int:
    result = align(config_from_args(args), progress=not args.quiet)
    print(f"final model: {result.final_dir}")
    print(f"checkpoints: {result.checkpoint_dir}")
    return 0


def _add_align(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="align a model on multi-objective preference pairs (RACO and baselines)",
        description=(
            "Runs one alignment run: loads the model and the preference data, trains with the "
            "chosen method (raco: clipped CAGrad over one DPO loss per objective), checkpoints, "
            "evaluates, and exports the aligned model to <output-dir>/final in Hugging Face "
            "layout. Required: --model and --dataset. Settings come from --preset, then "
            "--config FILE (YAML or TOML), then flags."
        ),
    )
    add_config_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary text")
    parser.set_defaults(handler=_cmd_align)


def _cmd_sweep(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.weights_grid:
        grid = parse_weights_grid(args.weights_grid, len(config.objectives) or None)
    elif args.grid:
        if not config.objectives:
            raise ValueError("--grid needs --objectives (the grid's dimension).")
        grid = simplex_grid(len(config.objectives), args.grid)
    elif config.weights:
        grid = [config.weights]
    else:
        raise ValueError("give --grid N, --weights-grid 'w;w;...' or --weights.")
    if not config.weights:
        config = config.replace(weights=grid[0])
    methods = [m.strip() for m in (args.methods or config.method).split(",") if m.strip()]
    prompts = None
    if args.eval_data:
        prompts = held_out_prompts(
            args.eval_data,
            args.eval_schema or config.schema,
            split=args.eval_data_split,
            num_prompts=args.num_prompts,
        )
    result = run_sweep(
        config,
        grid,
        methods,
        judges=args.judge,
        prompts=prompts,
        num_prompts=args.num_prompts,
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
    )
    for run in result.runs:
        print(f"{run.status:8s} {run.method:8s} {run.weights} {run.run_dir}")
    if result.report is not None:
        print(f"front: {result.report.paths['markdown']}")
    return 0


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="SPEC",
        help=(
            "a judge (repeatable): length[:objective], lexicon:FILE[:objective[:positive]], "
            "reward-model:DIR[:objective], implicit[:objective]"
        ),
    )
    parser.add_argument("--num-prompts", type=int, default=32, help="held-out prompts (32)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="response length (64)")


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="align for a grid of weight vectors and methods, then evaluate the Pareto front",
        description=(
            "Runs `raco-jax align` for every method and weight vector into "
            "<output-dir>/<method>/w_<weights>/ (finished runs are skipped, unfinished ones "
            "resumed), then generates responses to held-out prompts with every run and the "
            "base model, scores them with the judges and writes the Pareto front (plot, "
            "tables, hypervolume with the base model's scores as reference point) into "
            "<output-dir>/evaluation/."
        ),
    )
    add_config_flags(parser)
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--grid", type=int, default=None, help="N interior simplex points per edge direction"
    )
    grid.add_argument(
        "--weights-grid", default=None, help="explicit weight vectors: '0.2,0.8;0.5,0.5;0.8,0.2'"
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated methods (default: --method)"
    )
    parser.add_argument("--eval-data", default=None, help="prompts from these preference data")
    parser.add_argument("--eval-schema", default=None, help="schema of --eval-data")
    parser.add_argument("--eval-data-split", default="train", help="split of --eval-data")
    _add_evaluation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    parser.set_defaults(handler=_cmd_sweep)


# -- evaluate ----------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if (args.data is None) == (args.data_dir is None):
        raise ValueError(
            "give --data-dir (preference metrics of the runs on its pairs) or --data "
            "(generate and judge responses to its prompts), not both."
        )
    log = None if args.quiet else print
    if args.data_dir is not None:
        paths = evaluate_preference_runs(
            args.runs,
            args.data_dir,
            args.output_dir,
            schema=None if args.schema == "auto" else args.schema,
            split=args.split,
            batch_size=args.batch_size,
            max_pairs=args.max_pairs,
            log=log,
        ).paths
    else:
        prompts = held_out_prompts(
            args.data,
            "generic" if args.schema == "auto" else args.schema,
            split=args.split,
            num_prompts=args.num_prompts,
        )
        paths = evaluate_runs(
            args.runs,
            prompts,
            args.judge,
            args.output_dir,
            base_model=args.base_model,
            max_new_tokens=args.max_new_tokens,
            log=log,
        ).paths
    for kind, path in paths.items():
        print(f"{kind:14s} {path}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score saved runs on preference pairs or held-out prompts; write their front",
        description=(
            "With --data-dir: recomputes every run's preference metrics (implicit-reward "
            "accuracy, mean margin, DPO loss per objective) on the pairs of that directory "
            "against the base model, and writes the tables and the accuracy front. With --data: "
            "generates responses to its prompts with every run's final model and the base "
            "model, scores them with the judges, and writes the Pareto front (plot, CSV/Markdown "
            "table, hypervolume with the base model's scores as reference point)."
        ),
    )
    parser.add_argument("--runs", nargs="+", required=True, help="run directories")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="preference pairs in the runs' schema (a directory or file), e.g. held-out pairs",
    )
    parser.add_argument("--data", default=None, help="preference data whose prompts are used")
    parser.add_argument(
        "--schema",
        default="auto",
        help="schema of the data (default: the runs' for --data-dir, generic for --data)",
    )
    parser.add_argument("--split", default="train", help="split of the data (train)")
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="--data-dir: at most N pairs, drawn across the objectives with a fixed seed",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="--data-dir: pairs per pass")
    parser.add_argument(
        "--base-model", default=None, help="the model the runs started from (default: theirs)"
    )
    parser.add_argument("--output-dir", default="evaluation", help="where the front goes")
    _add_evaluation_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the written files")
    parser.set_defaults(handler=_cmd_evaluate)


# -- launch ------------------------------------------------------------------------------------


def _cmd_launch(args: argparse.Namespace) -> int:
    command = list(args.command_line)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("give the command to run after --, e.g. -- align --config run.yaml.")
    return launch(
        command,
        args.num_processes,
        devices_per_process=args.devices_per_process,
        port=args.port,
        log_dir=args.log_dir,
        heartbeat_timeout=args.heartbeat_timeout,
    )


def _add_launch(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a command as several JAX processes on this machine (a multi-host run)",
        description=(
            "Starts N processes of `raco-jax COMMAND ...` connected by jax.distributed (the "
            "command needs --distributed), shows process 0's output and writes the others' to "
            "--log-dir/process-<i>.log. If one process fails or is killed, the others are "
            "stopped and the message says which; rerun with --resume to continue."
        ),
    )
    parser.add_argument("--num-processes", type=int, required=True, help="N processes")
    parser.add_argument(
        "--devices-per-process",
        type=int,
        default=None,
        help="simulate D CPU devices per process (default: the real devices)",
    )
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
    parser.add_argument(
        "--log-dir", default="raco_jax_launch", help="where processes 1..N-1 write their output"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=None,
        help="seconds without a heartbeat before a process is given up (JAX's default: 100)",
    )
    parser.add_argument(
        "command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run"
    )
    parser.set_defaults(handler=_cmd_launch)


# -- the parser and the entry point ---------------------------------------------------------


_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_toy,
    _add_align,
    _add_sweep,
    _add_evaluate,
    _add_launch,
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
      >>> args = build_parser().parse_args(["demo", "--quick", "--objectives", "3"])
      >>> args.quick, args.objectives, args.seed, args.output_dir
      (True, 3, 0, 'raco_demo')
    """
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
      The exit status: 0 on success, 2 for a bad input (argparse's errors exit with 2 too), 1
      for a run stopped by a NaN or by running out of memory, 130 on Ctrl-C.

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
      >>> with contextlib.redirect_stderr(io.StringIO()) as err:
      ...     status = main(["align"])
      >>> status, err.getvalue().splitlines()[0][:51]
      (2, 'raco-jax: error: missing required settings: --model')
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.handler(args))
    except _REPORTED as err:
        return _report_failure(err)


if __name__ == "__main__":
    sys.exit(main())
