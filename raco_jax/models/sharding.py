"""Logical-axis sharding for the decoders: one rules table from logical names to mesh axes.

Every decoder parameter carries logical axis names (``out_sharding`` metadata) from the
vocabulary ``vocab, embed, heads, kv_heads, head_dim, mlp, norm``; activations use ``batch``.
A rules table maps each logical name to a mesh axis (``"data"``, ``"fsdp"``, ``"tensor"``), a
tuple of mesh axes, or ``None`` (replicated). `DEFAULT_RULES` is FSDP over ``embed`` plus tensor
parallelism over ``vocab``/``heads``/``kv_heads``/``mlp``.

A dimension that its mesh axes do not divide is replicated instead of failing (e.g. 2 KV heads
on a 4-way tensor axis), mesh axes missing from the mesh are ignored (so one table serves
smaller meshes), and a mesh axis is used at most once per array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from raco_jax.models.decoder import KVCache

__all__ = [
    "DEFAULT_RULES",
    "KV_CACHE_AXES",
    "MESH_AXES",
    "Rules",
    "cache_shardings",
    "logical_axes",
    "logical_to_mesh_axes",
    "make_mesh",
    "model_shardings",
    "named_sharding",
    "partition_spec",
    "shard_model",
]

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]] | Mapping[str, Any]

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
)

# Logical axes of the KVCache's key/value arrays [B, max_len, kv_heads, head_dim].
KV_CACHE_AXES: tuple[str | None, ...] = ("batch", None, "kv_heads", "head_dim")


def make_mesh(
    shape: Sequence[int] | None = None,
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh with Auto axis types (default: every device on ``fsdp``).

    Example:
        >>> from raco_jax.models.sharding import make_mesh
        >>> make_mesh((1, 1, 1)).axis_names
        ('data', 'fsdp', 'tensor')
    """
    axis_names = tuple(axis_names)
    if shape is None:
        count = len(devices) if devices is not None else jax.device_count()
        shape = tuple(count if name == "fsdp" else 1 for name in axis_names)
        if "fsdp" not in axis_names:
            shape = (count, *(1,) * (len(axis_names) - 1))
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"shape {shape} and axis_names {axis_names} differ in length")
    kwargs: dict[str, Any] = {"axis_types": (jax.sharding.AxisType.Auto,) * len(axis_names)}
    if devices is not None:
        kwargs["devices"] = devices
    return jax.make_mesh(shape, axis_names, **kwargs)


def _rules_dict(rules: Rules | None) -> dict[str, Any]:
    if rules is None:
        rules = DEFAULT_RULES
    if isinstance(rules, Mapping):
        return dict(rules)
    out: dict[str, Any] = {}
    for entry in rules:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(
                f"rules entries must be (logical_name, mesh_axes) pairs, got {entry!r}"
            )
        name, axes = entry
        out.setdefault(name, axes)  # first match wins, like flax's logical rules
    return out


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names stored on a parameter (its ``out_sharding`` metadata), or None.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.sharding import logical_axes
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> logical_axes(Decoder(c, rngs=nnx.Rngs(0)).layers[0].self_attn.q_proj.kernel)
        ('embed', 'heads', 'head_dim')
    """
    metadata = variable.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):
        names = metadata.get(key)
        if names is not None:
            return tuple(names)
    return None


def logical_to_mesh_axes(
    names: Sequence[str | None] | None,
    rules: Rules | None = None,
) -> PartitionSpec:
    """Map logical axis names to a PartitionSpec with the rules table (no shape checks).

    Example:
        >>> from raco_jax.models.sharding import logical_to_mesh_axes
        >>> logical_to_mesh_axes(("embed", "heads", "head_dim"))
        P('fsdp', 'tensor', None)
    """
    if names is None:
        return PartitionSpec()
    table = _rules_dict(rules)
    return PartitionSpec(*(table.get(name) if name is not None else None for name in names))


def partition_spec(
    names: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Rules | None = None,
) -> PartitionSpec:
    """PartitionSpec for an array of ``shape`` with logical axes ``names`` on ``mesh``.

    A mesh axis that does not divide the dimension (given the axes kept before it) is left out,
    so the dimension is replicated over it; mesh axes absent from ``mesh`` are dropped; a mesh
    axis already used by an earlier dimension is not reused.

    Example:
        >>> from raco_jax.models.sharding import make_mesh, partition_spec
        >>> mesh = make_mesh((1, 1, 1))
        >>> partition_spec(("vocab", "embed"), (10, 4), mesh)
        P('tensor', 'fsdp')
    """
    if names is None:
        return PartitionSpec()
    names = tuple(names)
    if len(names) != len(shape):
        raise ValueError(f"logical axes {names} do not match the array rank of shape {shape}")
    table = _rules_dict(rules)
    used: set[str] = set()
    spec: list[Any] = []
    for name, dim in zip(names, shape, strict=True):
        axes = table.get(name) if name is not None else None
        if axes is None:
            spec.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        kept: list[str] = []
        size = 1
        for axis in axes:
            if axis not in mesh.shape or axis in used:
                continue
            if dim % (size * mesh.shape[axis]):
                continue  # not divisible: leave this mesh axis out (replicate over it)
            kept.append(axis)
            size *= mesh.shape[axis]
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def named_sharding(
    names: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Rules | None = None,
) -> NamedSharding:
    """`NamedSharding` for logical axes ``names`` and ``shape`` (see `partition_spec`).

    Example:
        >>> from raco_jax.models.sharding import make_mesh, named_sharding
        >>> named_sharding(("embed", "mlp"), (8, 16), make_mesh((1, 1, 1))).spec
        P('fsdp', 'tensor')
    """
    return NamedSharding(mesh, partition_spec(names, shape, mesh, rules))


def model_shardings(
    model_or_state: nnx.Module | nnx.State,
    mesh: Mesh,
    rules: Rules | None = None,
) -> nnx.State:
    """The `NamedSharding` of every parameter, as an `nnx.State` shaped like ``nnx.state(model)``.

    Works on concrete models and on abstract ones (`nnx.eval_shape`); its leaves can be passed as
    `jax.jit` ``in_shardings``/``out_shardings`` for the model state.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.sharding import make_mesh, model_shardings
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> shardings = model_shardings(Decoder(c, rngs=nnx.Rngs(0)), make_mesh((1, 1, 1)))
        >>> shardings["embed_tokens"]["embedding"].spec
        P('tensor', 'fsdp')
    """
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)

    def to_sharding(variable: Any) -> Any:
        if not isinstance(variable, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        value = variable.get_value()
        return named_sharding(logical_axes(variable), np.shape(value), mesh, rules)

    return jax.tree.map(to_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
    """Move every parameter of ``model`` onto its sharding (in place); returns ``model``.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.sharding import make_mesh, shard_model
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = shard_model(Decoder(c, rngs=nnx.Rngs(0)), make_mesh((1, 1, 1)))
        >>> model.embed_tokens.embedding[...].sharding.spec
        P('tensor', 'fsdp')
    """
    state = nnx.state(model)
    shardings = model_shardings(state, mesh, rules)
    placed = jax.tree.map(
        lambda variable, sharding: variable.replace(jax.device_put(variable.get_value(), sharding)),
        state,
        shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    nnx.update(model, placed)
    return model


def cache_shardings(cache: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """NamedShardings for a `KVCache` (same pytree structure): keys/values use `KV_CACHE_AXES`,
    the per-slot arrays shard their batch axis, ``length`` is replicated.

    Example:
        >>> import jax
        >>> from raco_jax.models import KVCache, ModelConfig
        >>> from raco_jax.models.sharding import cache_shardings, make_mesh
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> cache = KVCache.create(c, batch_size=2, max_len=8)
        >>> cache = jax.device_put(cache, cache_shardings(cache, make_mesh((1, 1, 1))))
        >>> cache.keys[0].sharding.spec
        P(('data', 'fsdp'), None, 'tensor', None)
    """
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")

    def kv(array: jax.Array) -> NamedSharding:
        return named_sharding(KV_CACHE_AXES, array.shape, mesh, rules)

    per_slot = named_sharding(("batch", None), cache.key_valid.shape, mesh, rules)
    return KVCache(
        keys=tuple(kv(a) for a in cache.keys),
        values=tuple(kv(a) for a in cache.values),
        key_positions=per_slot,
        key_valid=per_slot,
        length=NamedSharding(mesh, PartitionSpec()),
    )
