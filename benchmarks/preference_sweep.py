"""The pieces the preference-pair sweeps share (``benchmarks/hh_rlhf.py``, ``benchmarks/conflict.py``).

* data: JSON-lines / JSON-list row files (:func:`read_rows`, :func:`write_rows`), the HH-RLHF
  subsets and their fixed-seed train/validation split (:func:`hh_subset_files`,
  :func:`split_hh_subsets`), a fixed-seed split of any rows (:func:`split_rows`);
* runs: one :class:`~raco_jax.train.config.AlignConfig` from the sweep's flags
  (:func:`align_config`) and the resumable loop over them (:func:`train_runs`: finished runs are
  skipped, unfinished ones resumed from their last checkpoint);
* diagnostics from a run's ``metrics.jsonl``, for any number of objectives: seconds per step
  (:func:`step_times`), the per-step gradient cosines of every pair of objectives, how often the
  clip of RACO's dual turns the update (:func:`clip_changes_direction`), and the share of each
  objective's gradient in the update next to its user weight (:func:`run_diagnostics`);
* report helpers (:func:`markdown_table`, :func:`floats`).

Import it from a script in ``benchmarks/`` (its folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HH_SUBSETS = {"helpful": "helpful-base", "harmless": "harmless-base"}


# -- data ---------------------------------------------------------------------------------------


def read_rows(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` / ``.json`` file (a JSON list), optionally gzipped.

    Example:
        >>> import gzip, json, pathlib, tempfile
        >>> from preference_sweep import read_rows, write_rows
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_rows(d / "a.jsonl.gz", [{"x": 1}, {"x": 2}])
        >>> write_rows(d / "b.json.gz", [{"x": 3}])
        >>> read_rows(d / "a.jsonl.gz"), read_rows(d / "b.json.gz")
        ([{'x': 1}, {'x': 2}], [{'x': 3}])
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    if path.name.removesuffix(".gz").endswith(".json"):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_rows(path: str | pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes rows atomically, gzipped: a JSON list for ``*.json.gz``, else JSON lines.

    Example: see :func:`read_rows`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        if path.name.removesuffix(".gz").endswith(".json"):
            json.dump(list(rows), handle)
        else:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    tmp.replace(path)


def split_rows(
    rows: Sequence[Any], train: int, val: int, rng: np.random.Generator
) -> tuple[list[Any], list[Any]]:
    """A seeded permutation: the first ``val`` rows for validation, the next ``train`` for
    training (disjoint; fewer when the pool is smaller).

    Example:
        >>> import numpy as np
        >>> from preference_sweep import split_rows
        >>> train, val = split_rows(list(range(10)), 6, 3, np.random.default_rng(0))
        >>> len(train), len(val), set(train) & set(val)
        (6, 3, set())
    """
    order = rng.permutation(len(rows))
    return [rows[i] for i in order[val : val + train]], [rows[i] for i in order[:val]]


def hh_subset_files(
    data_dir: str | pathlib.Path, subsets: Mapping[str, str] = HH_SUBSETS
) -> dict[str, dict[str, list[pathlib.Path]]]:
    """The files of each HH-RLHF subset: ``{objective: {"all" | "train" | "test": [paths]}}``.

    Two layouts: ``<subset>.jsonl[.gz]`` files (../shared/data/hh-rlhf: one pool per subset,
    split by :func:`split_hh_subsets`), or the hub's ``<subset>/train.jsonl.gz`` and
    ``<subset>/test.jsonl.gz`` (train from ``train``, validation from ``test``).

    Raises:
        FileNotFoundError: naming what is missing.

    Example:
        >>> import gzip, json, pathlib, tempfile
        >>> from preference_sweep import hh_subset_files
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("helpful-base/train", "helpful-base/test", "harmless-base/train",
        ...              "harmless-base/test"):
        ...     (d / name).parent.mkdir(exist_ok=True)
        ...     with gzip.open(d / f"{name}.jsonl.gz", "wt") as f:
        ...         _ = f.write(json.dumps({"chosen": "a", "rejected": "b"}) + "\\n")
        >>> sorted(hh_subset_files(d)["helpful"])
        ['test', 'train']
    """
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"HH-RLHF data directory {root} does not exist: pass --data-dir (the files "
            "helpful-base.jsonl.gz and harmless-base.jsonl.gz, or the hub's helpful-base/ and "
            "harmless-base/ folders)."
        )
    found: dict[str, dict[str, list[pathlib.Path]]] = {}
    for objective, subset in subsets.items():
        folder = root / subset
        if folder.is_dir():
            parts = {split: sorted(folder.glob(f"{split}*.jsonl*")) for split in ("train", "test")}
            if not parts["train"] or not parts["test"]:
                raise FileNotFoundError(f"{folder} needs train.jsonl.gz and test.jsonl.gz.")
            found[objective] = parts
            continue
        files = sorted(root.glob(f"{subset}*.jsonl*"))
        if not files:
            raise FileNotFoundError(
                f"no {subset} data in {root}: expected {subset}.jsonl.gz or {subset}/train.jsonl.gz."
            )
        found[objective] = {"all": files}
    return found


def _hh_pool(files: Sequence[pathlib.Path]) -> list[dict[str, Any]]:
    """The transcripts of ``files`` as ``{chosen, rejected}`` rows, identical pairs dropped."""
    rows = [row for path in files for row in read_rows(path)]
    return [
        {"chosen": row["chosen"], "rejected": row["rejected"]}
        for row in rows
        if row.get("chosen") != row.get("rejected")
    ]


def split_hh_subsets(
    data_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    train_pairs: int,
    val_pairs: int,
    seed: int = 0,
    subsets: Mapping[str, str] = HH_SUBSETS,
) -> dict[str, dict[str, int]]:
    """Writes ``<out_dir>/{train,val}/<subset>.jsonl.gz``: a fixed-seed split per subset.

    From one pool per subset, a seeded permutation gives ``val_pairs`` validation rows first,
    then ``train_pairs`` training rows (disjoint; fewer if the pool is smaller). From the hub
    layout, training rows are drawn from ``train`` and validation rows from ``test``. Rows keep
    their HH-RLHF form (``chosen``, ``rejected`` transcripts). Rows whose transcripts are
    identical are dropped first. ``subsets`` maps objectives to subsets (default: helpful and
    harmless); the seed of subset number k is ``[seed, k]`` in the order of :data:`HH_SUBSETS`.

    Returns:
        ``{"train": {objective: n}, "val": {objective: n}}``.

    Example:
        >>> import gzip, json, pathlib, tempfile
        >>> from preference_sweep import split_hh_subsets
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for subset in ("helpful-base", "harmless-base"):
        ...     with gzip.open(d / f"{subset}.jsonl.gz", "wt") as f:
        ...         for i in range(10):
        ...             _ = f.write(json.dumps({"chosen": f"{i}a", "rejected": f"{i}b"}) + "\\n")
        >>> split_hh_subsets(d, d / "split", train_pairs=6, val_pairs=3, seed=0)
        {'train': {'helpful': 6, 'harmless': 6}, 'val': {'helpful': 3, 'harmless': 3}}
    """
    out = pathlib.Path(out_dir)
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    order = list(HH_SUBSETS) + [o for o in subsets if o not in HH_SUBSETS]
    for objective, parts in hh_subset_files(data_dir, subsets).items():
        rng = np.random.default_rng([seed, order.index(objective)])
        if "all" in parts:
            train, val = split_rows(_hh_pool(parts["all"]), train_pairs, val_pairs, rng)
        else:
            train_rows, test_rows = _hh_pool(parts["train"]), _hh_pool(parts["test"])
            train = [train_rows[i] for i in rng.permutation(len(train_rows))[:train_pairs]]
            val = [test_rows[i] for i in rng.permutation(len(test_rows))[:val_pairs]]
        write_rows(out / "train" / f"{subsets[objective]}.jsonl.gz", train)
        write_rows(out / "val" / f"{subsets[objective]}.jsonl.gz", val)
        counts["train"][objective] = len(train)
        counts["val"][objective] = len(val)
    return counts


# -- runs ---------------------------------------------------------------------------------------


def default_model(args: argparse.Namespace) -> int | None:
    """Fills ``args.model`` with the bundled SmolLM2-135M-Instruct GGUF when it is None.

    Returns:
      None, or 2 (after printing one line to stderr) when the bundled weights are not installed:
      the exit status of the benchmark.
    """
    if args.model is not None:
        return None
    from raco_jax.models.bundled import RealWeightsUnavailable, smollm2_135m_instruct_gguf

    try:
        args.model = str(smollm2_135m_instruct_gguf())
    except RealWeightsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return None


def align_config(args: argparse.Namespace, **fields: Any) -> Any:
    """The sweep's shared :class:`~raco_jax.train.config.AlignConfig` (model, optimiser, lengths,
    LoRA, logging, one device) from its flags, with ``fields`` (dataset, schema, objectives,
    weights, method, seed, output_dir, cache_dir, ...) set per run.

    Flags read: ``model, c, beta, learning_rate, batch_size, steps, max_length,
    max_prompt_length, lora_rank, dtype`` (and ``seed`` unless given in ``fields``).

    Example:
        >>> import argparse
        >>> from preference_sweep import align_config
        >>> args = argparse.Namespace(model="m.gguf", c=0.4, beta=0.1, learning_rate=5e-4,
        ...                           batch_size=8, steps=9, max_length=128,
        ...                           max_prompt_length=64, lora_rank=8, dtype="float32", seed=0)
        >>> config = align_config(args, method="raco", output_dir="out/r")
        >>> config.max_steps, config.lora_alpha, config.save_every, config.export_lora
        (9, 16.0, 3, 'adapter')
    """
    from raco_jax.train.config import AlignConfig

    values = {
        "model": str(args.model),
        "c": args.c,
        "beta": args.beta,
        "learning_rate": args.learning_rate,
        "schedule": "cosine",
        "warmup_ratio": 0.1,
        "max_grad_norm": 1.0,
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "max_length": args.max_length,
        "max_prompt_length": args.max_prompt_length,
        "lora_rank": args.lora_rank,
        "lora_alpha": 2.0 * args.lora_rank if args.lora_rank else 16.0,
        "export_lora": "adapter" if args.lora_rank else "merged",
        "dtype": args.dtype,
        "param_dtype": "float32",
        "seed": args.seed,
        "log_every": 1,
        "save_every": max(1, args.steps // 3),
        "mesh": (1, 1, 1),
        **fields,
    }
    return AlignConfig(**values)


def train_runs(
    configs: Sequence[Any],
    *,
    mesh: Any,
    tokenizer: Any = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, str]:
    """Trains every config with :func:`raco_jax.align`, resumably: a finished run is skipped, an
    unfinished one continues from its last checkpoint (``resume=True``).

    Returns:
        ``{output_dir: "skipped" | "resumed" | "trained"}``.
    """
    from raco_jax.train import align, run_is_finished
    from raco_jax.train.runs import has_checkpoints

    statuses = {}
    for i, config in enumerate(configs, 1):
        name = pathlib.Path(config.output_dir).name
        if run_is_finished(config.output_dir):
            log(f"[{i}/{len(configs)}] {name}: finished earlier, skipped")
            statuses[config.output_dir] = "skipped"
            continue
        resumed = has_checkpoints(config.output_dir)
        log(f"[{i}/{len(configs)}] {name}" + (" (resuming)" if resumed else ""))
        align(config.replace(resume=True), mesh=mesh, tokenizer=tokenizer, progress=progress)
        statuses[config.output_dir] = "resumed" if resumed else "trained"
    return statuses


# -- diagnostics --------------------------------------------------------------------------------


def metric_rows(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The training rows of a run's ``metrics.jsonl`` (evaluation rows left out).

    Example:
        >>> import tempfile
        >>> from preference_sweep import metric_rows
        >>> metric_rows(tempfile.mkdtemp())
        []
    """
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if not any(key.startswith("eval_") for key in r)]


def step_times(run_dir: str | pathlib.Path) -> list[float]:
    """Seconds between consecutive logged steps of a run (the first step, which compiles, is
    left out), from its ``metrics.jsonl``.

    Example:
        >>> import json, pathlib, tempfile
        >>> from preference_sweep import step_times
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> lines = [{"step": s, "elapsed": e} for s, e in [(1, 30.0), (2, 32.0), (3, 35.0)]]
        >>> _ = (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\\n" for x in lines))
        >>> step_times(d)
        [2.0, 3.0]
    """
    rows = [r for r in metric_rows(run_dir) if "elapsed" in r and "step" in r]
    return [
        (b["elapsed"] - a["elapsed"]) / (b["step"] - a["step"])
        for a, b in itertools.pairwise(rows)
        if b["step"] > a["step"]
    ]


def clip_changes_direction(dual: Sequence[float], weights: Sequence[float]) -> bool:
    """Whether RACO's clip ``p~ = min(p*, w)`` turns the correction ``sum_k p_k g_k`` away from
    the unclipped one: some ``p*_k > w_k`` and ``p~`` is not a positive multiple of ``p*`` (for
    K = 2: ``p*`` is not a vertex ``e_k`` with ``w_k > 0``). Then RACO and unclipped CAGrad take
    different steps.

    Example:
        >>> from preference_sweep import clip_changes_direction
        >>> [clip_changes_direction(p, (0.2, 0.8)) for p in [(1, 0), (0.5, 0.5), (0.2, 0.8)]]
        [False, True, False]
        >>> clip_changes_direction((0.2, 0.3, 0.5), (0.4, 0.4, 0.2))
        True
    """
    p = np.asarray(dual, np.float64)
    w = np.asarray(weights, np.float64)
    if not np.any(p > w + 1e-9):
        return False
    clipped = np.minimum(p, w)
    norms = np.linalg.norm(clipped) * np.linalg.norm(p)
    if norms <= 1e-12:
        return True  # the correction vanishes
    return bool(clipped @ p / norms < 1.0 - 1e-9)


def _cosine_stats(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, np.float64)
    return {
        "cos_mean": float(array.mean()),
        "cos_median": float(np.median(array)),
        "cos_min": float(array.min()),
        "frac_conflicting": float(np.mean(array < 0)),
    }


def run_diagnostics(run_dir: str | pathlib.Path, objectives: Sequence[str]) -> dict[str, Any]:
    """What a run's optimiser saw, per logged step, for K objectives.

    Returns:
        ``steps`` (steps that logged gradient cosines; 0 and nothing else without any),
        ``pairs``: ``{"<i>/<j>": {"cos_mean", "cos_median", "cos_min", "frac_conflicting"}}``
        for every pair of objectives (``frac_conflicting``: cosine < 0),
        ``frac_any_conflict`` (steps with some negative cosine),
        ``share``: ``{k: mean over steps of c_k / sum_j c_j}``, the share of objective k's
        gradient in the update direction (the user weight for DPO-LW), ``weights`` (the user
        weights), ``share_gap`` (mean over steps of the total-variation distance
        ``0.5 sum_k |share_k - w_k|``), ``norm_ratio_median``: ``{k: median ||g_k|| /
        ||g_first||}``, ``frac_clipped`` (RACO/CAGrad steps with some ``p*_k > w_k``) and
        ``clip_changed_steps`` (RACO/CAGrad: steps where :func:`clip_changes_direction`; NaN for
        the other methods).

    Example:
        >>> import json, pathlib, tempfile
        >>> from preference_sweep import run_diagnostics
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "config.json").write_text(json.dumps({"method": "dpo-lw",
        ...                                                 "weights": [0.3, 0.7]}))
        >>> rows = [{"step": 1, "aggregation/cos/a/b": c, "aggregation/coefficients/a": 0.3,
        ...          "aggregation/coefficients/b": 0.7} for c in (-0.5, 0.1, 0.3)]
        >>> _ = (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> stats = run_diagnostics(d, ["a", "b"])
        >>> shares = {name: round(v, 6) for name, v in stats["share"].items()}
        >>> stats["pairs"]["a/b"]["cos_median"], shares, round(stats["share_gap"], 6)
        (0.1, {'a': 0.3, 'b': 0.7}, 0.0)
    """
    names = list(objectives)
    pair_keys = {
        f"{a}/{b}": f"aggregation/cos/{a}/{b}" for a, b in itertools.combinations(names, 2)
    }
    rows = [r for r in metric_rows(run_dir) if any(key in r for key in pair_keys.values())]
    if not rows:
        return {"steps": 0}
    config_path = pathlib.Path(run_dir) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    weights = np.asarray(config.get("weights") or [1.0 / len(names)] * len(names), np.float64)
    pairs = {
        name: _cosine_stats([r[key] for r in rows if key in r])
        for name, key in pair_keys.items()
        if any(key in r for r in rows)
    }
    any_conflict = [any(r.get(key, 0.0) < 0 for key in pair_keys.values()) for r in rows]
    coefficient_keys = [f"aggregation/coefficients/{n}" for n in names]
    shares = np.asarray(
        [[r[k] for k in coefficient_keys] for r in rows if all(k in r for k in coefficient_keys)],
        np.float64,
    )
    totals = shares.sum(axis=1, keepdims=True) if shares.size else shares
    shares = shares / np.where(totals == 0, 1.0, totals) if shares.size else shares
    norms = {
        n: [
            r[f"grad_norm/{n}"] / r[f"grad_norm/{names[0]}"]
            for r in rows
            if r.get(f"grad_norm/{names[0]}", 0) > 0 and f"grad_norm/{n}" in r
        ]
        for n in names[1:]
    }
    solves_dual = config.get("method") in ("raco", "cagrad")
    dual_keys = [f"aggregation/dual/{n}" for n in names]
    duals = [[r[k] for k in dual_keys] for r in rows if all(k in r for k in dual_keys)]
    clipped = [r["aggregation/num_clipped"] > 0 for r in rows if "aggregation/num_clipped" in r]
    changed = [clip_changes_direction(p, weights) for p in duals] if solves_dual else []
    return {
        "steps": len(rows),
        "pairs": pairs,
        "frac_any_conflict": float(np.mean(any_conflict)),
        "share": {n: float(shares[:, k].mean()) for k, n in enumerate(names)}
        if shares.size
        else {},
        "weights": {n: float(w) for n, w in zip(names, weights, strict=True)},
        "share_gap": float(np.mean(0.5 * np.abs(shares - weights).sum(axis=1)))
        if shares.size
        else float("nan"),
        "norm_ratio_median": {
            n: float(np.median(v)) if v else float("nan") for n, v in norms.items()
        },
        "frac_clipped": float(np.mean(clipped)) if clipped else float("nan"),
        "clip_changed_steps": float(sum(changed)) if changed else float("nan"),
    }


# -- report helpers -----------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table.

    Example:
        >>> from preference_sweep import markdown_table
        >>> print("\\n".join(markdown_table(["a", "b"], [[1, "x"]])))
        | a | b |
        |---|---|
        | 1 | x |
    """
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def floats(text: str) -> list[float]:
    """Comma-separated numbers.

    Example:
        >>> from preference_sweep import floats
        >>> floats("0.1, 0.5,")
        [0.1, 0.5]
    """
    return [float(x) for x in text.split(",") if x.strip()]
