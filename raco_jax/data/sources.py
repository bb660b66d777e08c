"""Reading preference data: hub ids, local files and directories, datasets, rows.

:func:`load_preferences` reads a dataset (a Hugging Face hub id, local ``.json``/``.jsonl``/
``.jsonl.gz``/``.parquet``/``.csv`` files or a directory of them, a ``datasets.Dataset``, or a list
of row dicts), hands every row to the adapter of a registered :class:`~raco_jax.data.Schema` and
returns the :class:`~raco_jax.data.pairs.PreferencePair` list together with a
:class:`~raco_jax.data.LoadReport`. Nothing is dropped silently: a row that cannot be used
(missing column, empty response, a label outside the schema, ...) is counted per reason, with
the first few row indices, or raises a ``ValueError`` naming the row when ``strict=True``. A
file that cannot be read at all (empty, or a line that is not JSON) raises a ``ValueError``
naming the file and the line.

Rows whose two responses are identical (``identical_responses``) or which carry no label for any
requested objective (``unlabeled_for_objectives``, e.g. harmless-base pairs when only ``helpful``
is requested) are skipped too; the latter is counted under ``LoadReport.filtered`` and is
never an error in strict mode.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import inspect
import json
import lzma
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from raco_jax.data.derived import derived_objectives
from raco_jax.data.pairs import PreferencePair, text_is_empty
from raco_jax.data.schemas import (
    FILTER_REASONS,
    LoadReport,
    MalformedRow,
    Schema,
    SchemaContext,
    SchemaError,
    get_schema,
    list_schemas,
)

__all__ = ["load_preferences", "parse_dataset_source"]

_DATA_SUFFIXES = {
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def _registered() -> list[Schema]:
    return [get_schema(name) for name in list_schemas()]


def parse_dataset_source(text: str) -> str | list[str]:
    """A ``--dataset`` argument as :func:`load_preferences` takes it: a hub id or a path as
    given, a comma-separated list of paths as a list.

    Example:
        >>> from raco_jax.data import parse_dataset_source
        >>> parse_dataset_source("Anthropic/hh-rlhf")
        'Anthropic/hh-rlhf'
        >>> parse_dataset_source("a.jsonl, b.jsonl")
        ['a.jsonl', 'b.jsonl']
    """
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _open_text(path: Path) -> Any:
    """The file as text, decompressed (.gz, .bz2, .xz); None for other compressions."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if suffix in _COMPRESSION_SUFFIXES:
        return None
    return path.open("r", encoding="utf-8")


def _check_json_file(path: Path) -> None:
    """Raises one clear ValueError for a JSON file that is empty or not JSON (file and line).

    A ``.json`` file may hold one JSON document (a list of rows, or an object) or JSON lines;
    ``.jsonl``/``.ndjson`` files hold one object per line. Blank lines are allowed.
    """
    handle = _open_text(path)
    if handle is None:
        return  # .zst/.lz4: left to datasets
    try:
        with handle:
            text = handle.read()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as text ({err})") from None
    if not text.strip():
        raise ValueError(f"{path}: no rows (the file is empty)")
    if _base_suffix(path) == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            pass  # maybe JSON lines: checked below
        else:
            if isinstance(document, list) and not document:
                raise ValueError(f"{path}: no rows (an empty JSON list)")
            if isinstance(document, (list, dict)):
                return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{path} line {number}: a row must be a JSON object, got {type(row).__name__}"
            )


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


# ----------------------------------------------------------------------------------------------
# Reading sources
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Part:
    name: str
    rows: Iterable[Mapping[str, Any]]
    columns: tuple[str, ...]


def _builder_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in _DATA_SUFFIXES:
        return _DATA_SUFFIXES[suffixes[-1]]
    raise ValueError(
        f"cannot tell the format of {str(path)!r}: expected .json, .jsonl, .parquet or .csv "
        "(optionally compressed, e.g. .jsonl.gz)"
    )


def _part_name(path: Path, root: Path | None = None) -> str:
    relative = path.relative_to(root) if root is not None else Path(path.name)
    return str(relative.parent / relative.name.split(".")[0]).removeprefix("./")


def _is_data_file(path: Path) -> bool:
    try:
        _builder_for(path)
    except ValueError:
        return False
    return path.is_file()


def _directory_files(root: Path, split: str, load_kwargs: Mapping[str, Any]) -> list[Path]:
    """Data files under ``root`` (hidden folders and the datasets cache skipped); when some are
    named after the split (``train.jsonl.gz``, ``train-00000-of-00002.parquet``), only those."""
    cache = load_kwargs.get("cache_dir")
    cache_path = Path(cache).resolve() if cache else None
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in parts) or not _is_data_file(path):
            continue
        if cache_path is not None and cache_path in path.resolve().parents:
            continue
        files.append(path)
    base_split = split.split("[")[0]
    named = [
        p
        for p in files
        if p.name.split(".")[0] == base_split or p.name.startswith(base_split + "-")
    ]
    return named or files


def _load_local(
    path: Path, split: str, load_kwargs: Mapping[str, Any], name: str | None = None
) -> _Part:
    import datasets  # an optional dependency (raco-jax[data])

    if _builder_for(path) == "json":
        _check_json_file(path)
    base_split = split.split("[")[0] or "train"
    try:
        dataset = datasets.load_dataset(
            _builder_for(path), data_files={base_split: [str(path)]}, split=split, **load_kwargs
        )
    except (TypeError, ValueError):
        raise
    except Exception as err:  # datasets' generation errors wrap the reader's own
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ValueError(f"{path}: cannot be read as {_builder_for(path)} data ({reason})") from err
    return _Part(name or _part_name(path), dataset, tuple(dataset.column_names))


def _dataset_part(name: str, dataset: Any, split: str) -> _Part:
    columns = dataset.column_names
    if isinstance(columns, Mapping):  # a DatasetDict: pick the split
        base_split = split.split("[")[0]
        if base_split not in dataset:
            raise ValueError(f"split {split!r} not in the dataset's splits {list(dataset)}")
        dataset = dataset[base_split]
        columns = dataset.column_names
    return _Part(name, dataset, tuple(columns or ()))


def _is_path_list(source: Any) -> bool:
    return (
        isinstance(source, Sequence)
        and not isinstance(source, str)
        and bool(source)
        and all(isinstance(item, (str, os.PathLike)) for item in source)
    )


def _read_parts(
    source: Any,
    schema: Schema | None,
    split: str,
    load_kwargs: dict[str, Any],
    precheck: Callable[[str], None],
) -> tuple[list[_Part], str]:
    """The parts of ``source``; ``precheck(part name)`` runs before each part is loaded."""
    if hasattr(source, "column_names"):  # datasets.Dataset / IterableDataset / DatasetDict
        precheck("dataset")
        return [_dataset_part("dataset", source, split)], type(source).__name__
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = _directory_files(path, split, load_kwargs)
            if not files:
                raise ValueError(f"no .json/.jsonl/.parquet/.csv files in directory {str(path)!r}")
            names = [_part_name(p, path) for p in files]
            for name in names:
                precheck(name)
            parts = [
                _load_local(p, split, load_kwargs, name)
                for p, name in zip(files, names, strict=True)
            ]
            return parts, str(path)
        if path.is_file():
            precheck(_part_name(path))
            return [_load_local(path, split, load_kwargs)], str(path)
        if isinstance(source, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
            return _load_hub(source, schema, split, load_kwargs, precheck), source
        raise ValueError(f"source {str(source)!r} is neither an existing path nor a hub id")
    if _is_path_list(source):
        paths = [Path(item) for item in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"source files not found: {missing}")
        for p in paths:
            precheck(_part_name(p))
        return [_load_local(p, split, load_kwargs) for p in paths], ", ".join(map(str, paths))
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows = list(source)
        if not all(isinstance(row, Mapping) for row in rows):
            raise TypeError("source rows must be mappings (dicts) of column -> value")
        columns: list[str] = []
        for row in rows[:1000]:
            columns.extend(c for c in row if c not in columns)
        precheck("rows")
        return [_Part("rows", rows, tuple(columns))], f"{len(rows)} in-memory rows"
    raise TypeError(
        "source must be a hub id, a path (file or directory), a list of paths, a datasets.Dataset "
        f"or a list of row dicts; got {type(source).__name__}"
    )


def _load_hub(
    source: str,
    schema: Schema | None,
    split: str,
    load_kwargs: dict[str, Any],
    precheck: Callable[[str], None],
) -> list[_Part]:
    import datasets

    kwargs = {**(schema.load_kwargs if schema else {}), **load_kwargs}
    data_dirs = kwargs.pop("data_dir", None)
    if isinstance(data_dirs, (list, tuple)):
        for data_dir in data_dirs:
            precheck(str(data_dir))
        parts = []
        for data_dir in data_dirs:
            dataset = datasets.load_dataset(source, data_dir=data_dir, split=split, **kwargs)
            parts.append(_dataset_part(str(data_dir), dataset, split))
        return parts
    name = str(data_dirs) if data_dirs else source
    precheck(name)
    if data_dirs is not None:
        kwargs["data_dir"] = data_dirs
    dataset = datasets.load_dataset(source, split=split, **kwargs)
    return [_dataset_part(name, dataset, split)]


def _infer_schema(source: Any, columns: Sequence[str]) -> Schema:
    if isinstance(source, str):
        for schema in _registered():
            if source in schema.hub_ids:
                return schema
    fitting = [s for s in _registered() if s.columns and set(s.columns) <= set(columns)]
    if not fitting:
        raise ValueError(
            f"no registered schema fits columns {list(columns)}; pass schema= one of "
            f"{list_schemas()} or register one"
        )
    best = max(len(s.columns) for s in fitting)
    candidates = [s.name for s in fitting if len(s.columns) == best]
    if len(candidates) > 1:
        raise ValueError(
            f"columns {list(columns)} fit several schemas {candidates}; pass schema= explicitly"
        )
    return get_schema(candidates[0])


def _call_adapter(schema: Schema, unit: Any, context: SchemaContext) -> list[Any]:
    """Run the adapter; a row error raised part-way is returned as the last item, after what was
    yielded before it (partial problems yielded earlier are never lost)."""
    adapter = schema.adapter
    try:
        n_params = len(inspect.signature(adapter).parameters)
    except (TypeError, ValueError):
        n_params = 2
    items: list[Any] = []
    try:
        result = adapter(unit, context) if n_params >= 2 else adapter(unit)
        if isinstance(result, (PreferencePair, MalformedRow)):
            items.append(result)
        elif result is not None:
            for item in result:
                items.append(item)
    except SchemaError:
        raise
    except MalformedRow as err:
        items.append(err)
    except (KeyError, TypeError, ValueError) as err:
        reason = "missing_column" if isinstance(err, KeyError) else "invalid_row"
        items.append(MalformedRow(reason, f"{type(err).__name__}: {err}"))
    return items


def _group_rows(
    schema: Schema, rows: Iterable[Mapping[str, Any]], start: int
) -> Iterator[tuple[list[int], Any]]:
    groups: dict[Any, list[int]] = {}
    members: dict[Any, list[Mapping[str, Any]]] = {}
    missing: list[int] = []
    key_fn = schema.group_by
    for offset, row in enumerate(rows):
        key = key_fn(row) if callable(key_fn) else row.get(key_fn)  # type: ignore[arg-type]
        if key is None or (isinstance(key, str) and not key.strip()):
            missing.append(start + offset)
            continue
        if isinstance(key, list):
            key = repr(key)
        groups.setdefault(key, []).append(start + offset)
        members.setdefault(key, []).append(row)
    for index in missing:
        yield [index], None
    for key, indices in groups.items():
        yield indices, members[key]


@dataclasses.dataclass
class _Recorder:
    """Counts a problem in the report, or raises it (strict mode) naming the row."""

    report: LoadReport
    strict: bool
    schema: str
    part: str
    start: int

    def __call__(self, index: int, reason: str, message: str) -> None:
        if self.strict and reason not in FILTER_REASONS:
            raise ValueError(
                f"{self.schema} row {index - self.start} of {self.part}: {reason}: {message}"
            )
        self.report.record(reason, index, message)


def _checked_pair(
    pair: PreferencePair, wanted: tuple[str, ...], recorder: _Recorder, index: int
) -> PreferencePair | None:
    """The pair restricted to the wanted objectives, or None (counted) if it cannot be used.

    Derived objectives (:mod:`raco_jax.data.derived`) label every pair later, from its
    tokens; a pair is kept when it carries a label for one of the wanted schema objectives, or
    when only derived objectives are wanted.
    """
    if text_is_empty(pair.prompt):
        recorder(index, "empty_prompt", "the prompt is empty")
        return None
    if text_is_empty(pair.response_a) or text_is_empty(pair.response_b):
        side = "a" if text_is_empty(pair.response_a) else "b"
        recorder(index, "empty_response", f"response_{side} is empty")
        return None
    if pair.response_a == pair.response_b:
        recorder(index, "identical_responses", "the two responses are identical")
        return None
    pair = pair.restricted(wanted)
    labels = [o for o in wanted if o not in derived_objectives()]
    if labels and not pair.signs:
        recorder(index, "unlabeled_for_objectives", f"no label for {labels}")
        return None
    return dataclasses.replace(
        pair,
        source=pair.source if pair.source is not None else recorder.part,
        row=pair.row if pair.row is not None else index - recorder.start,
    )


def load_preferences(
    source: Any,
    schema: str | Schema | None = None,
    objectives: Sequence[str] | None = None,
    split: str = "train",
    strict: bool = False,
    **kwargs: Any,
) -> tuple[list[PreferencePair], LoadReport]:
    """Load a preference dataset as :class:`~raco_jax.data.pairs.PreferencePair` objects.

    Args:
        source: a hub id (``"PKU-Alignment/PKU-SafeRLHF"``, needs network or the local HF
            cache), a local ``.json``/``.jsonl``/``.jsonl.gz``/``.parquet``/``.csv`` file, a list
            of such files, a directory (the data files under it, sorted; when some are named after
            the split, like ``helpful-base/train.jsonl.gz``, only those), a ``datasets.Dataset``
            (or ``DatasetDict``, from which ``split`` is taken), or a list of row dicts. Local
            files are read with ``datasets.load_dataset("json" / "parquet" / "csv",
            data_files=...)``, one part per file (HH-RLHF takes each file's subset from its
            path).
        schema: a registered schema name (see the module docstring), a :class:`Schema`, or
            ``None`` to pick it from the hub id or, failing that, from the columns.
        objectives: the objectives to keep, in order (default: all the schema provides); may
            include derived objectives such as ``concise`` (:mod:`raco_jax.data.derived`),
            whose signs :func:`~raco_jax.data.tokenize_pairs` computes. Pairs labeled for none
            of the schema objectives among them are skipped
            (``filtered['unlabeled_for_objectives']``).
        split: the split to read (slices like ``"train[:50]"`` work); for local files it only
            names the split.
        strict: raise ``ValueError`` naming the row at the first malformed row instead of
            counting it.
        **kwargs: schema options (e.g. ``pairing``, ``max_pairs_per_prompt``, ``subset``,
            ``conversation``, ``verbosity_label``, ``objective``), the rest is passed to
            ``datasets.load_dataset`` (``cache_dir``, ``revision``, ``data_dir``, ...).

    Returns:
        ``(pairs, report)``: the pairs in reading order and a :class:`LoadReport`.

    Raises:
        ValueError: unknown schema, objectives the schema does not provide, a part lacking a
            required column, or (strict) a malformed row.
        SchemaError: (a ``ValueError``) options or a part the schema cannot read, e.g. an
            HH-RLHF part whose subset is unknown.
        TypeError: keyword arguments that are neither schema options nor usable by
            ``datasets.load_dataset`` (in-memory sources take none).

    Example (PKU-SafeRLHF layout, in memory):

    >>> rows = [dict(prompt="How do I pick a lock?", response_0="Use a pick.",
    ...              response_1="I can't help with that.", better_response_id=0,
    ...              safer_response_id=1),
    ...         dict(prompt="Hi", response_0="Hello", response_1="", better_response_id=0,
    ...              safer_response_id=0)]
    >>> pairs, report = load_preferences(rows, "pku-saferlhf")
    >>> pairs[0].signs
    {'helpful': 1, 'harmless': -1}
    >>> report.issues, report.first_rows
    ({'empty_response': 1}, {'empty_response': [1]})
    >>> load_preferences(rows, "pku-saferlhf", strict=True)
    Traceback (most recent call last):
    ...
    ValueError: pku-saferlhf row 1 of rows: empty_response: 'response_1' is empty
    >>> load_preferences(rows, "pku-saferlhf", objectives=["honest"])
    Traceback (most recent call last):
    ...
    ValueError: objectives ['honest'] are not provided by schema 'pku-saferlhf', which provides ['helpful', 'harmless'] (and the derived objectives ['concise'], labeled from the responses)
    """
    resolved = get_schema(schema) if isinstance(schema, str) else schema
    if resolved is None and isinstance(source, str):
        resolved = next((s for s in _registered() if source in s.hub_ids), None)
    if resolved is not None and not isinstance(resolved, Schema):
        raise TypeError(f"schema must be a name, a Schema or None, got {type(schema).__name__}")
    option_names = set(resolved.options) if resolved else set()
    if resolved is None:  # options may belong to the schema inferred later
        option_names = {name for s in _registered() for name in s.options}
    options = {k: v for k, v in kwargs.items() if k in option_names}
    load_kwargs = {k: v for k, v in kwargs.items() if k not in option_names}

    def precheck(part: str) -> None:
        if resolved is not None and resolved.check_part is not None:
            resolved.check_part(part, {**resolved.options, **options})

    parts, description = _read_parts(source, resolved, split, load_kwargs, precheck)
    if resolved is None:
        resolved = _infer_schema(source, parts[0].columns if parts else ())
    unknown = set(options) - set(resolved.options)
    if not isinstance(source, (str, os.PathLike)) and not _is_path_list(source):
        unknown |= set(load_kwargs)  # nothing is passed to datasets.load_dataset for these
    if unknown:
        raise TypeError(
            f"schema {resolved.name!r} has no option(s) {sorted(unknown)}; its options are "
            f"{sorted(resolved.options)} (other keyword arguments go to datasets.load_dataset, "
            "for hub ids and files only)"
        )
    merged_options = {**resolved.options, **options}
    if resolved.check_part is not None:  # again, in case the schema was inferred from columns
        for part in parts:
            resolved.check_part(part.name, merged_options)

    provided: list[str] = []
    part_objectives: list[tuple[str, ...]] = []
    for part in parts:
        missing = [c for c in resolved.columns if c not in part.columns]
        if missing and part.columns:
            raise ValueError(
                f"{part.name} lacks column(s) {missing} that schema {resolved.name!r} needs; "
                f"it has {list(part.columns)}"
            )
        names = resolved.objectives_for(part.columns, merged_options)
        part_objectives.append(names)
        provided.extend(n for n in names if n not in provided)
    if objectives is None:
        wanted = tuple(provided)
    else:
        if isinstance(objectives, str):
            raise TypeError("objectives must be a sequence of names, e.g. ['helpful', 'harmless']")
        wanted = tuple(objectives)
        if len(set(wanted)) != len(wanted) or not wanted:
            raise ValueError(f"objectives must be distinct names, got {list(wanted)}")
        absent = [o for o in wanted if o not in provided and o not in derived_objectives()]
        if absent:
            raise ValueError(
                f"objectives {absent} are not provided by schema {resolved.name!r}, "
                f"which provides {provided} (and the derived objectives "
                f"{list(derived_objectives())}, labeled from the responses)"
            )

    report = LoadReport(resolved.name, description, wanted)
    pairs: list[PreferencePair] = []
    start = 0
    for part, names in zip(parts, part_objectives, strict=True):
        context = SchemaContext(resolved.name, part.name, merged_options, names)
        recorder = _Recorder(report, strict, resolved.name, part.name, start)
        if resolved.group_by is not None:
            units: Iterable[tuple[list[int], Any]] = _group_rows(resolved, part.rows, start)
        else:
            units = (([start + offset], row) for offset, row in enumerate(part.rows))
        count = 0
        for indices, unit in units:
            count += len(indices)
            if unit is None:
                recorder(indices[0], "missing_column", f"{resolved.group_by!r} is missing or empty")
                continue
            for item in _call_adapter(resolved, unit, context):
                if isinstance(item, MalformedRow):
                    recorder(indices[item.item or 0], item.reason, item.message)
                    continue
                if not isinstance(item, PreferencePair):
                    raise TypeError(
                        f"schema {resolved.name!r} adapter returned {type(item).__name__}; "
                        "expected PreferencePair or MalformedRow"
                    )
                pair = _checked_pair(item, wanted, recorder, indices[0])
                if pair is not None:
                    pairs.append(pair)
        report.parts.append((part.name, start, count))
        start += count
    report.rows_read = start
    report.pairs_built = len(pairs)
    return pairs, report
