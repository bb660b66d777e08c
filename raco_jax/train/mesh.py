"""Placing an alignment run on a device mesh: batches, train state and the jitted step.

The parameters' shardings come from the model's logical axes and one rules table
(:mod:`raco_jax.models.sharding`); this module adds what the training loop needs on top:

* :func:`run_mesh`: the ``(data, fsdp, tensor)`` mesh of a config (``-1`` = the rest of the
  devices), or a sub-mesh over chosen devices.
* :func:`batch_shardings` / :func:`shard_batch`: a :class:`~raco_jax.preference.PreferenceBatch`
  split over ``("data", "fsdp")`` on its pair axis (token rows ``[2B, T]`` and ``ref_logps
  [2B]`` on axis 0, ``signs``/``labeled``/``reward_margins`` ``[K, B]`` on axis 1). Every
  process builds the same global batch on the host (the order is seeded) and places only the
  shards of its own devices (``jax.make_array_from_callback``), so multi-host runs need no
  host-to-host traffic for data.
* :func:`opt_state_shardings`: the optimizer state sharded like the parameters wherever it holds
  a parameter-shaped subtree (AdamW's moments), replicated elsewhere (counts, the K x K Gram
  matrix, the CAGrad dual, PCGrad's key).
* :func:`shard_train_state` / :func:`shard_train_step`: the train state placed on these
  shardings, and the :class:`~raco_jax.train.TrainStep` compiled with them as ``in_shardings``
  and ``out_shardings`` (:meth:`~raco_jax.train.TrainStep.compile`), so the state keeps its layout from step to step (no re-sharding, no
  re-compilation) and metrics come back replicated.

Stacked gradients ``[K, ...]`` are never placed by hand: inside the step they inherit the
parameters' sharding with the objective axis unsharded, XLA reduces them over the data axes like
any gradient, and the Gram matrix of the aggregator adds only K x K partial sums per leaf to the
communication (``tests/train/test_align.py`` checks this on the compiled HLO).

Example:
    >>> import jax
    >>> from raco_jax.train.mesh import run_mesh
    >>> mesh = run_mesh((-1, 1, 1), devices=jax.devices()[:1])
    >>> dict(mesh.shape)
    {'data': 1, 'fsdp': 1, 'tensor': 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from raco_jax.models.sharding import make_mesh
from raco_jax.preference import PreferenceBatch
from raco_jax.train.config import resolve_mesh_shape
from raco_jax.train.step import TrainState, TrainStep

__all__ = [
    "BATCH_AXES",
    "batch_shardings",
    "data_parallel_size",
    "opt_state_shardings",
    "replicated",
    "run_mesh",
    "shard_batch",
    "shard_train_state",
    "shard_train_step",
    "train_state_shardings",
]

#: The mesh axes the pair axis of a batch is split over.
BATCH_AXES: tuple[str, str] = ("data", "fsdp")


def run_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The run's ``(data, fsdp, tensor)`` mesh; one size may be -1 ("the rest of the devices").

    Args:
      shape: three sizes (``AlignConfig.mesh``).
      devices: the devices to use (default: all of them, ``jax.devices()``).

    Returns:
      A :class:`jax.sharding.Mesh` with axes ``("data", "fsdp", "tensor")`` (Auto axis types).

    Raises:
      ValueError: the sizes do not multiply to the number of devices.

    Example:
        >>> import jax
        >>> from raco_jax.train.mesh import run_mesh
        >>> run_mesh((1, -1, 1), devices=jax.devices()[:1]).axis_names
        ('data', 'fsdp', 'tensor')
    """
    devices = list(jax.devices() if devices is None else devices)
    resolved = resolve_mesh_shape(shape, len(devices))
    return make_mesh(resolved, devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the pair axis of a batch is split: ``data * fsdp``.

    Example:
        >>> import jax
        >>> from raco_jax.train.mesh import data_parallel_size, run_mesh
        >>> data_parallel_size(run_mesh((1, 1, 1), devices=jax.devices()[:1]))
        1
    """
    return int(np.prod([mesh.shape[axis] for axis in BATCH_AXES if axis in mesh.shape]))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that puts a full copy of an array on every device of ``mesh``.

    Example:
        >>> import jax
        >>> from raco_jax.train.mesh import replicated, run_mesh
        >>> replicated(run_mesh((1, 1, 1), devices=jax.devices()[:1])).spec
        P()
    """
    return NamedSharding(mesh, PartitionSpec())


def batch_shardings(batch: PreferenceBatch, mesh: Mesh) -> PreferenceBatch:
    """The sharding of each field of ``batch``: the pair axis split over ``("data", "fsdp")``.

    Token rows ``[2B, T]`` (and ``layer_inputs [2B, T, embed]``) and ``ref_logps [2B]`` are
    split on axis 0 (so a device holds some
    rows of response a or of response b), ``signs``, ``labeled`` and ``reward_margins``
    ``[K, B]`` on axis 1. Fields that are None stay None.

    Example:
        >>> import jax, numpy as np
        >>> from raco_jax.preference import make_batch
        >>> from raco_jax.train.mesh import batch_shardings, run_mesh
        >>> batch = make_batch(np.ones((4, 3)), np.ones((4, 3)), np.zeros((4, 3)), [[1, -1]])
        >>> shardings = batch_shardings(batch, run_mesh((1, 1, 1), devices=jax.devices()[:1]))
        >>> shardings.input_ids.spec, shardings.signs.spec, shardings.ref_logps
        (P(('data', 'fsdp'),), P(None, ('data', 'fsdp')), None)
    """
    axes = tuple(axis for axis in BATCH_AXES if axis in mesh.shape)
    rows = NamedSharding(mesh, PartitionSpec(axes))
    columns = NamedSharding(mesh, PartitionSpec(None, axes))
    by_field = {
        "input_ids": rows,
        "attention_mask": rows,
        "loss_mask": rows,
        "signs": columns,
        "labeled": columns,
        "ref_logps": rows,
        "reward_margins": columns,
        "layer_inputs": rows,
    }
    return PreferenceBatch(
        **{
            name: None if getattr(batch, name) is None else sharding
            for name, sharding in by_field.items()
        }
    )


def shard_batch(batch: PreferenceBatch, mesh: Mesh | None) -> PreferenceBatch:
    """Places a host batch (NumPy fields) on the mesh, split as :func:`batch_shardings` says.

    Every process must pass the same global batch; each one only copies the slices that its
    own devices hold. Without a mesh the fields become (default-device) jax arrays.

    Raises:
      ValueError: the number of pairs is not divisible by ``data * fsdp``.

    Example:
        >>> import jax, numpy as np
        >>> from raco_jax.preference import make_batch
        >>> from raco_jax.train.mesh import run_mesh, shard_batch
        >>> batch = make_batch(np.ones((4, 3)), np.ones((4, 3)), np.zeros((4, 3)), [[1, -1]])
        >>> placed = shard_batch(batch, run_mesh((1, 1, 1), devices=jax.devices()[:1]))
        >>> type(placed.input_ids).__name__, placed.signs.shape
        ('ArrayImpl', (1, 2))
    """
    if mesh is None:
        return jax.tree.map(jax.numpy.asarray, batch)
    ways = data_parallel_size(mesh)
    if batch.num_pairs % ways:
        raise ValueError(
            f"the batch has {batch.num_pairs} pairs, which the mesh's data x fsdp = {ways} "
            "devices cannot split evenly; use a batch_size divisible by it."
        )
    shardings = batch_shardings(batch, mesh)

    def place(value: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, batch, shardings)


def opt_state_shardings(opt_state: Any, params_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for an optax state: parameter-shaped subtrees like the parameters, the rest
    replicated.

    A subtree of ``opt_state`` with exactly the parameters' tree structure (AdamW's ``mu`` and
    ``nu``, any accumulator) gets ``params_shardings``; every other leaf (step counts,
    hyperparameters, the aggregator's K x K Gram matrix and dual, PRNG keys) is replicated.

    Args:
      opt_state: the optimizer state (arrays or ``jax.ShapeDtypeStruct``).
      params_shardings: the parameters' shardings, same structure as the parameters (or a
        tree of their arrays, whose ``.sharding`` is read).
      mesh: the mesh.

    Returns:
      A tree of shardings, with the structure of ``opt_state`` (a prefix of it where a
      parameter-shaped subtree was matched).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from raco_jax.train.mesh import opt_state_shardings, run_mesh
        >>> mesh = run_mesh((1, 1, 1), devices=jax.devices()[:1])
        >>> params = {"w": jnp.ones((2, 2))}
        >>> shardings = opt_state_shardings(optax.adam(1e-3).init(params),
        ...                                 {"w": "params-sharding"}, mesh)
        >>> shardings[0].mu, shardings[0].count.spec
        ({'w': 'params-sharding'}, P())
    """
    params_structure = jax.tree.structure(params_shardings)
    full = replicated(mesh)

    def is_params_like(node: Any) -> bool:
        if isinstance(node, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)) or node is None:
            return False
        try:
            return jax.tree.structure(node) == params_structure
        except Exception:  # pragma: no cover - exotic nodes
            return False

    def assign(node: Any) -> Any:
        if is_params_like(node):
            return params_shardings
        return full

    return jax.tree.map(assign, opt_state, is_leaf=is_params_like)


def train_state_shardings(state: Any, mesh: Mesh) -> Any:
    """The shardings of a :class:`~raco_jax.train.TrainState` whose parameters are placed.

    ``params``, ``rest`` and ``ref_state`` keep the shardings their arrays have (set by
    :func:`raco_jax.models.shard_model` or ``from_pretrained(mesh=...)``); the optimizer state
    follows :func:`opt_state_shardings`; the step counter is replicated.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from raco_jax.train import TrainState
        >>> from raco_jax.train.mesh import run_mesh, train_state_shardings
        >>> mesh = run_mesh((1, 1, 1), devices=jax.devices()[:1])
        >>> params = {"w": jax.device_put(jnp.ones(2), jax.sharding.NamedSharding(
        ...     mesh, jax.sharding.PartitionSpec("fsdp")))}
        >>> state = TrainState(jnp.zeros((), jnp.int32), params, {}, optax.adam(1.0).init(params))
        >>> train_state_shardings(state, mesh).opt_state[0].mu["w"].spec
        P('fsdp',)
    """

    def own(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: x.sharding if isinstance(x, jax.Array) else replicated(mesh), tree
        )

    params = own(state.params)
    return TrainState(
        step=replicated(mesh),
        params=params,
        rest=own(state.rest),
        opt_state=opt_state_shardings(state.opt_state, params, mesh),
        ref_state=None if state.ref_state is None else own(state.ref_state),
    )


def shard_train_state(state: Any, mesh: Mesh) -> tuple[Any, Any]:
    """Places a train state on its shardings; returns ``(placed state, shardings)``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from raco_jax.train import TrainState
        >>> from raco_jax.train.mesh import run_mesh, shard_train_state
        >>> mesh = run_mesh((1, 1, 1), devices=jax.devices()[:1])
        >>> params = {"w": jnp.ones(2)}
        >>> state, _ = shard_train_state(
        ...     TrainState(jnp.zeros((), jnp.int32), params, {}, optax.adam(1.0).init(params)),
        ...     mesh)
        >>> state.opt_state[0].count.sharding.spec
        P()
    """
    shardings = train_state_shardings(state, mesh)
    return jax.device_put(state, shardings), shardings


def shard_train_step(step: TrainStep, state_shardings: Any, mesh: Mesh) -> TrainStep:
    """Compiles a :class:`~raco_jax.train.TrainStep` with the state's shardings pinned.

    The state goes in and comes out with ``state_shardings`` (so the layout never drifts and the
    step compiles once per batch shape), the batch keeps the sharding it was placed with
    (:func:`shard_batch`), and the metrics come back replicated
    (:meth:`~raco_jax.train.TrainStep.compile`).

    Args:
      step: the train step.
      state_shardings: from :func:`train_state_shardings` (or :func:`shard_train_state`).
      mesh: the mesh.

    Returns:
      ``step``, now running under these shardings.

    Example:
        >>> import jax, optax
        >>> from flax import nnx
        >>> import raco_jax
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.train import TrainStep
        >>> from raco_jax.train.mesh import run_mesh, shard_train_state, shard_train_step
        >>> mesh = run_mesh((1, 1, 1), devices=jax.devices()[:1])
        >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
        ...                      intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = Decoder(config, rngs=nnx.Rngs(0))
        >>> step = TrainStep(model, optax.chain(raco_jax.weighted_sum((0.5, 0.5)),
        ...                  optax.sgd(0.1)), method="dpo-lw", objectives=("a", "b"),
        ...                  weights=(0.5, 0.5), reference="online")
        >>> state, shardings = shard_train_state(step.init(model), mesh)
        >>> shard_train_step(step, shardings, mesh) is step
        True
    """
    return step.compile(state_shardings, None, replicated(mesh))
