"""Checkpoints of an alignment run, on top of orbax: save every N steps, resume sharded.

A checkpoint holds everything a run needs to continue exactly where it stopped:

- ``state``: a pytree of arrays, usually ``{"params": ..., "opt_state": ..., "rng": ...}`` (the
  trainable parameters, which may be sharded ``jax.Array`` leaves on a mesh, the optax state
  with its nested NamedTuples, and the run's PRNG key). Typed PRNG key arrays
  (``jax.random.key``), such as the key inside :class:`raco_jax.PCGradState`, are stored as
  their raw ``uint32`` data (:func:`jax.random.key_data`) plus the name of their implementation,
  and come back as typed keys (:func:`jax.random.wrap_key_data`), so the same key stream
  continues after a restart.
- ``data_state``: the batch iterator's JSON-ready ``state_dict()`` (epoch, batch position).
- ``metrics`` and ``metadata``: JSON dicts (the last step's metrics; the run's config, ...).
- ``good``: whether the step's metrics were all finite. The newest good checkpoint is never
  deleted by ``max_to_keep``, so that a run whose loss turns NaN can stop and restore it
  (:meth:`CheckpointManager.last_good_step`).

Each step is an orbax composite checkpoint with three items: ``state`` (``StandardSave``),
``data`` and ``run`` (``JsonSave``). Saves are asynchronous where orbax allows: :meth:`save`
returns once the arrays are copied off the devices, the files are written in the background,
and :meth:`CheckpointManager.wait_until_finished` (or :meth:`close`) waits for them. Orbax
writes each step into a temporary directory and renames it when complete, so a process killed
in the middle of a save leaves no half-written checkpoint behind: :meth:`latest_step` only ever
names finished ones, and the stale temporary directory is removed the next time a manager opens
the directory.

Example:
    >>> import tempfile
    >>> import jax, jax.numpy as jnp, optax
    >>> from raco_jax.train.checkpoint import CheckpointManager
    >>> params = {"w": jnp.ones((2, 3))}
    >>> state = {"params": params, "opt_state": optax.adamw(1e-3).init(params),
    ...          "rng": jax.random.key(0)}
    >>> with CheckpointManager(tempfile.mkdtemp(), save_every=10, max_to_keep=2) as ckpt:
    ...     for step in range(1, 31):
    ...         _ = ckpt.save(step, state, data_state={"epoch": 0, "batch": step},
    ...                       metrics={"loss": 0.5})
    ...     ckpt.wait_until_finished()
    ...     restored = ckpt.restore(target=state)
    >>> ckpt.all_steps(), restored.step, restored.data_state
    ([20, 30], 30, {'epoch': 0, 'batch': 30})
    >>> restored.state["rng"].dtype
    key<fry>
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import jax
import numpy as np

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "abstract_target",
]

PyTree = Any

_STATE_ITEM = "state"
_DATA_ITEM = "data"
_RUN_ITEM = "run"
_ITEMS = (_STATE_ITEM, _DATA_ITEM, _RUN_ITEM)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint.

    Attributes:
      step: the step it was saved at.
      state: the pytree of arrays (with the target's structure, dtypes and shardings when
        :meth:`CheckpointManager.restore` was given a target; nested dicts and lists otherwise).
      data_state: the batch iterator's state dict, or None if none was saved.
      metrics: the metrics saved with it (JSON values).
      metadata: the metadata dict saved with it (for example the run's config).
      good: whether its metrics were all finite (or what ``good=`` said when saving).

    Example:
        >>> from raco_jax.train.checkpoint import Checkpoint
        >>> Checkpoint(step=3, state={}, data_state=None, metrics={}, metadata={}, good=True).step
        3
    """

    step: int
    state: PyTree
    data_state: dict[str, Any] | None
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    good: bool


def _is_prng_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _path_name(path: Sequence[Any]) -> str:
    """A path through a pytree as 'a/0/b', the same for a NamedTuple and the dict orbax returns."""
    parts = []
    for entry in path:
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _key_data_sharding(sharding: Any, ndim: int, extra: int) -> Any:
    """The sharding of ``key_data(keys)`` given that of ``keys`` (trailing dims replicated)."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec) + extra)
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return sharding
    return None


def abstract_target(tree: PyTree) -> PyTree:
    """The restore target for a pytree: ``jax.ShapeDtypeStruct`` leaves carrying the shardings.

    ``jax.Array`` leaves become ``ShapeDtypeStruct(shape, dtype, sharding=x.sharding)``; leaves
    that already are ``ShapeDtypeStruct`` keep their sharding (the first device when they have
    none); other leaves (numpy arrays, Python numbers) are kept and restored as numpy values.
    Build the tree with ``jax.eval_shape`` (plus the shardings from the mesh rules) to restore
    without allocating the state twice.

    Args:
      tree: a pytree of arrays or ``ShapeDtypeStruct``.

    Returns:
      The same structure with abstract leaves.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from raco_jax.train.checkpoint import abstract_target
        >>> leaf = abstract_target({"w": jnp.zeros((2, 3))})["w"]
        >>> leaf.shape, leaf.dtype, leaf.sharding.is_fully_replicated
        ((2, 3), dtype('float32'), True)
    """

    def to_abstract(x: Any) -> Any:
        if isinstance(x, jax.ShapeDtypeStruct):
            if x.sharding is None:
                device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(to_abstract, tree)


def _keys_to_data(state: PyTree) -> tuple[PyTree, dict[str, str]]:
    """Replaces typed PRNG key leaves by their uint32 data; returns the impl name per path."""
    impls: dict[str, str] = {}

    def convert(path: Sequence[Any], x: Any) -> Any:
        if _is_prng_key(x):
            impls[_path_name(path)] = str(jax.random.key_impl(x))
            return jax.random.key_data(x)
        return x

    return jax.tree_util.tree_map_with_path(convert, state), impls


def _abstract_keys_to_data(target: PyTree) -> PyTree:
    """The target with typed-key leaves replaced by the abstract uint32 data they are saved as."""

    def convert(x: Any) -> Any:
        if not _is_prng_key(x):
            return x
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        sharding = getattr(x, "sharding", None)
        if sharding is not None:
            sharding = _key_data_sharding(sharding, len(x.shape), len(data.shape) - len(x.shape))
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)

    return jax.tree.map(convert, target)


def _data_to_keys(state: PyTree, impls: Mapping[str, str]) -> PyTree:
    """Wraps the leaves saved from typed keys back into typed keys."""

    def convert(path: Sequence[Any], x: Any) -> Any:
        impl = impls.get(_path_name(path))
        if impl is None:
            return x
        return jax.random.wrap_key_data(x, impl=impl)

    return jax.tree_util.tree_map_with_path(convert, state)


def _to_json(value: Any, name: str) -> Any:
    """JSON-ready copy of metrics/metadata: arrays and numpy scalars become Python values."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(value).tolist()
    raise TypeError(
        f"{name} must hold JSON values (dicts, lists, numbers, strings, arrays), "
        f"got {type(value).__name__}."
    )


def _all_finite(metrics: Any) -> bool:
    if isinstance(metrics, Mapping):
        return all(_all_finite(v) for v in metrics.values())
    if isinstance(metrics, list):
        return all(_all_finite(v) for v in metrics)
    if isinstance(metrics, float):
        return math.isfinite(metrics)
    return True


#: Renames of state paths between layouts, newest first: each maps a current path to where a
#: checkpoint written before the change holds it. ``AggregatorState`` and ``PCGradState`` nest
#: their diagnostics under ``diagnostics`` since raco_jax 0.1.0.dev0 of December 2026 (before:
#: the fields sat on the state itself).
_LEGACY_RENAMES = (lambda name: name.replace("/diagnostics/", "/"),)


def _legacy_target(saved: PyTree, target: PyTree) -> tuple[PyTree | None, Any]:
    """A restore target in the layout of an older checkpoint, and how to rebuild ``target``.

    Every leaf of ``target`` is looked up in the saved tree under its path, or under the path an
    older layout used (:data:`_LEGACY_RENAMES`); leaves the old layout did not have (new
    diagnostics) keep ``target``'s value (zeros for abstract leaves). Returns ``(None, None)``
    unless every saved leaf finds its place (then the saved tree is not an older layout of the
    target, and the original error stands).
    """
    saved_leaves = dict(
        (_path_name(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]
    )
    target_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    source_of: dict[str, str] = {}
    for path, _ in target_leaves:
        name = _path_name(path)
        for candidate in (name, *(rename(name) for rename in _LEGACY_RENAMES)):
            if candidate in saved_leaves:
                source_of[name] = candidate
                break
    if set(source_of.values()) != set(saved_leaves):  # not this layout: nothing may be dropped
        return None, None
    by_source = {
        source_of[_path_name(path)]: leaf
        for path, leaf in target_leaves
        if _path_name(path) in source_of
    }
    state_target = jax.tree_util.tree_map_with_path(
        lambda path, _: by_source[_path_name(path)], saved
    )

    def rebuild(restored: PyTree) -> PyTree:
        restored_leaves = dict(
            (_path_name(path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
        )
        values = []
        for path, leaf in target_leaves:
            source = source_of.get(_path_name(path))
            if source is not None:
                values.append(restored_leaves[source])
            elif isinstance(leaf, jax.ShapeDtypeStruct):
                values.append(jax.numpy.zeros(leaf.shape, leaf.dtype))
            else:
                values.append(leaf)
        return jax.tree_util.tree_unflatten(treedef, values)

    return state_target, rebuild


class CheckpointManager:
    """Saves and restores a run's checkpoints (orbax underneath), keeping the last good one.

    Args:
      directory: where the checkpoints go (one sub-directory per step); created if missing.
      save_every: :meth:`should_save` is true every this many steps (0: only explicit saves
        with ``force=True``, such as the one at the end of the run).
      max_to_keep: how many of the newest checkpoints to keep (None: all). The newest good
        checkpoint is kept as well, even if older.
      async_save: write in a background thread (:meth:`save` returns once the arrays are off
        the devices); False writes before returning.

    Example:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> from raco_jax.train.checkpoint import CheckpointManager
        >>> ckpt = CheckpointManager(tempfile.mkdtemp(), save_every=2, max_to_keep=1)
        >>> [ckpt.should_save(s) for s in (1, 2, 3, 4)]
        [False, True, False, True]
        >>> ckpt.save(2, {"w": jnp.ones(2)}, metrics={"loss": 0.1})
        True
        >>> ckpt.save(4, {"w": jnp.ones(2)}, metrics={"loss": float("nan")})
        True
        >>> ckpt.wait_until_finished()
        >>> ckpt.all_steps(), ckpt.latest_step(), ckpt.last_good_step()
        ([2, 4], 4, 2)
        >>> ckpt.close()
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        save_every: int = 0,
        max_to_keep: int | None = 3,
        async_save: bool = True,
    ) -> None:
        import orbax.checkpoint as ocp

        if save_every < 0:
            raise ValueError(f"save_every must be >= 0 (0: only forced saves), got {save_every}.")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None (keep all), got {max_to_keep}.")
        self._ocp = ocp
        self.directory = pathlib.Path(directory).absolute()
        self.save_every = int(save_every)
        self.max_to_keep = max_to_keep
        self.async_save = bool(async_save)
        # step -> whether it is good; read from the checkpoints' "run" items on opening and
        # kept up to date by save(), so the preservation policy never touches the disk.
        self._good_steps: dict[int, bool] = {}
        policies = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(n=max_to_keep), _LatestGood(self._good_steps)]
            ),
            enable_async_checkpointing=self.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
        for step in self.all_steps():
            self._good_steps[step] = bool(self._read_run(step).get("good", False))

    def _read_run(self, step: int) -> dict[str, Any]:
        """The small JSON "run" item of a step (good flag, metrics, metadata)."""
        ocp = self._ocp
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_RUN_ITEM: ocp.args.JsonRestore()})
            )
        except (FileNotFoundError, ValueError, KeyError):
            return {}
        return dict(restored[_RUN_ITEM] or {})

    # -- what is there ---------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """The steps of the finished checkpoints (and of the one being written), ascending.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> CheckpointManager(tempfile.mkdtemp()).all_steps()
            []
        """
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpoint's step, or None when there is none.

        A checkpoint whose writing was interrupted (the process was killed) is never listed.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> CheckpointManager(tempfile.mkdtemp()).latest_step() is None
            True
        """
        step = self._manager.latest_step()
        return None if step is None else int(step)

    def last_good_step(self) -> int | None:
        """The newest checkpoint whose metrics were all finite, or None.

        Waits for saves in flight first.

        Example:
            >>> import tempfile
            >>> import jax.numpy as jnp
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> ckpt = CheckpointManager(tempfile.mkdtemp(), async_save=False)
            >>> _ = ckpt.save(1, {"w": jnp.ones(2)}, metrics={"loss": 1.0}, force=True)
            >>> _ = ckpt.save(2, {"w": jnp.ones(2)}, metrics={"loss": float("inf")}, force=True)
            >>> ckpt.last_good_step()
            1
        """
        self.wait_until_finished()
        for step in reversed(self.all_steps()):
            if self._good_steps.get(step):
                return step
        return None

    def should_save(self, step: int) -> bool:
        """Whether ``step`` is a periodic save step (a multiple of ``save_every``, not saved yet).

        Example:
            >>> import tempfile
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> CheckpointManager(tempfile.mkdtemp(), save_every=5).should_save(10)
            True
        """
        if self.save_every <= 0 or step % self.save_every != 0:
            return False
        return step not in self.all_steps()

    # -- saving ----------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: PyTree,
        *,
        data_state: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        good: bool | None = None,
        force: bool = False,
    ) -> bool:
        """Saves a checkpoint at ``step`` if it is a save step (or ``force``); returns whether.

        With ``async_save`` the arrays are copied off the devices before this returns (the
        caller may donate or overwrite them) and written in the background; call
        :meth:`wait_until_finished` before reading the files or exiting. A step that already
        has a checkpoint is not saved again (so the final save may coincide with a periodic
        one).

        Args:
          step: the optimizer step (int).
          state: a pytree of arrays (params, optax state, PRNG key ...); sharded arrays are
            written shard by shard from each host.
          data_state: the batch iterator's JSON-ready ``state_dict()``.
          metrics: the step's metrics (JSON values or scalar arrays).
          metadata: anything else JSON-ready, such as ``{"config": config.to_dict()}``.
          good: whether this is a good checkpoint to fall back to; by default, whether every
            float in ``metrics`` is finite.
          force: save even if :meth:`should_save` says no.

        Returns:
          True if a save was started.

        Example:
            >>> import tempfile
            >>> import jax.numpy as jnp
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> ckpt = CheckpointManager(tempfile.mkdtemp(), save_every=100)
            >>> ckpt.save(7, {"w": jnp.ones(2)}), ckpt.save(7, {"w": jnp.ones(2)}, force=True)
            (False, True)
            >>> ckpt.close()
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}.")
        if not force and not self.should_save(step):
            return False
        if step in self.all_steps():
            return False
        ocp = self._ocp
        metrics_json = _to_json(dict(metrics or {}), "metrics")
        metadata_json = _to_json(dict(metadata or {}), "metadata")
        data_json = None if data_state is None else _to_json(dict(data_state), "data_state")
        if good is None:
            good = _all_finite(metrics_json)
        arrays, key_impls = _keys_to_data(state)
        run = {
            "step": step,
            "good": bool(good),
            "saved_at": time.time(),
            "metrics": metrics_json,
            "metadata": metadata_json,
            "prng_keys": key_impls,
        }
        self._good_steps[step] = bool(good)
        return bool(
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE_ITEM: ocp.args.StandardSave(arrays),
                        _DATA_ITEM: ocp.args.JsonSave({"data_state": data_json}),
                        _RUN_ITEM: ocp.args.JsonSave(run),
                    }
                ),
                force=True,
            )
        )

    def wait_until_finished(self) -> None:
        """Blocks until every background save is written and committed.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> CheckpointManager(tempfile.mkdtemp()).wait_until_finished()
        """
        self._manager.wait_until_finished()

    # -- restoring -------------------------------------------------------------------------

    def restore(self, step: int | None = None, target: PyTree = None) -> Checkpoint:
        """Restores the checkpoint at ``step`` (default: the newest finished one).

        Args:
          step: which step; None for :meth:`latest_step` (use :meth:`last_good_step` to fall
            back after a NaN).
          target: the state's structure, as arrays or ``jax.ShapeDtypeStruct`` (see
            :func:`abstract_target`). The arrays are restored with the target's dtypes and
            shardings, so a run on a mesh resumes sharded (also on a different mesh than the
            one that saved). Without a target, the state comes back as nested dicts and lists
            with the shardings it was saved with.

        Returns:
          A :class:`Checkpoint`.

        Raises:
          FileNotFoundError: if there is no (such) checkpoint.

        Example:
            >>> import tempfile
            >>> import jax, jax.numpy as jnp
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> ckpt = CheckpointManager(tempfile.mkdtemp(), async_save=False)
            >>> _ = ckpt.save(5, {"w": jnp.arange(3.0)}, metadata={"seed": 0}, force=True)
            >>> target = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
            >>> restored = ckpt.restore(target=target)
            >>> restored.step, restored.state["w"].tolist(), restored.metadata
            (5, [0.0, 1.0, 2.0], {'seed': 0})
        """
        ocp = self._ocp
        self.wait_until_finished()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}.")
        step = int(step)
        if step not in self.all_steps():
            self._manager.reload()
            if step not in self.all_steps():
                raise FileNotFoundError(
                    f"no checkpoint for step {step} in {self.directory}; "
                    f"available steps: {self.all_steps()}."
                )
        data_target = None if target is None else _abstract_keys_to_data(target)

        def restore_with(state_target: PyTree) -> Any:
            state_args = (
                ocp.args.StandardRestore()
                if state_target is None
                else ocp.args.StandardRestore(abstract_target(state_target))
            )
            return self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE_ITEM: state_args,
                        _DATA_ITEM: ocp.args.JsonRestore(),
                        _RUN_ITEM: ocp.args.JsonRestore(),
                    }
                ),
            )

        try:
            restored = restore_with(data_target)
            state = restored[_STATE_ITEM]
        except ValueError as err:
            if data_target is None or "tree structures do not match" not in str(err):
                raise
            saved = self._manager.item_metadata(step)[_STATE_ITEM].tree
            state_target, rebuild = _legacy_target(saved, data_target)
            if state_target is None:
                raise
            restored = restore_with(state_target)
            state = rebuild(restored[_STATE_ITEM])
        run = restored[_RUN_ITEM]
        state = _data_to_keys(state, run.get("prng_keys", {}))
        return Checkpoint(
            step=step,
            state=state,
            data_state=restored[_DATA_ITEM].get("data_state"),
            metrics=run.get("metrics", {}),
            metadata=run.get("metadata", {}),
            good=bool(run.get("good", True)),
        )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for pending saves, then releases orbax's threads.

        Example:
            >>> import tempfile
            >>> from raco_jax.train.checkpoint import CheckpointManager
            >>> CheckpointManager(tempfile.mkdtemp()).close()
        """
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({str(self.directory)!r}, save_every={self.save_every}, "
            f"max_to_keep={self.max_to_keep}, async_save={self.async_save})"
        )


@dataclasses.dataclass
class _LatestGood:
    """Orbax preservation policy: keep the newest checkpoint marked good in ``good_steps``."""

    good_steps: dict[int, bool]

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        good = [i for i, info in enumerate(checkpoints) if self.good_steps.get(int(info.step))]
        newest = max(good, key=lambda i: checkpoints[i].step, default=None)
        return [i == newest for i in range(len(checkpoints))]
