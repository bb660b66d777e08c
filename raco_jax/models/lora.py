"""Low-rank adapters (LoRA) for the decoders: apply, train only the adapters, disable, merge.

`apply_lora` replaces chosen projections (``q_proj``, ..., ``down_proj``; any `Linear`
attribute name of the model, ``lm_head`` included) by `LoRALinear`, whose forward is

    y = W x + (alpha / rank) * B (A dropout(x)),

with ``A`` ``[*in_features, rank]`` drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (as PEFT)
and ``B`` ``[rank, *out_features]`` zero, so the adapted model starts out equal to the base
model. The base kernel stays where it was (``...q_proj.kernel``, an `nnx.Param`); the adapters
are ``...q_proj.lora_a`` / ``lora_b``, of their own variable type `LoRAParam`. Hence:

* trainable-parameter filtering: ``nnx.Optimizer(model, tx, wrt=LoRAParam)``,
  ``nnx.grad(loss, argnums=nnx.DiffState(0, LoRAParam))``, ``nnx.state(model, LoRAParam)``
  (= `lora_params`) select exactly the adapters; the base weights are
  ``nnx.All(nnx.Param, nnx.Not(LoRAParam))``.
* disabling the adapters (the frozen base model, e.g. the DPO reference policy):
  ``without_lora(model)`` is a view of the same arrays with adapters off (no copy; usable
  inside jitted functions), ``with lora_disabled(model): ...`` switches them off in place for a
  block; both set the static ``lora_enabled`` flag, which ``nnx.view(model,
  lora_enabled=False)`` also reaches.
* export: `merge_lora` returns a plain `Decoder` with ``W + (alpha / rank) * A B`` folded in,
  which `raco_jax.models.save_pretrained` writes as an ordinary Hugging Face checkpoint.

Sharding: adapters carry logical axis names like the kernels (``lora_a`` of ``q_proj``:
``("embed", "lora_rank")``, ``lora_b``: ``("lora_rank", "heads", "head_dim")``), so
`raco_jax.models.shard_model` places them with the same rules table; ``lora_rank`` is not in
it and stays replicated.

Reference: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from raco_jax.models.decoder import Decoder, Linear
from raco_jax.models.param_map import hf_param_map
from raco_jax.models.sharding import logical_axes

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LoRAConfig",
    "LoRALinear",
    "LoRAParam",
    "apply_lora",
    "load_lora_adapters",
    "lora_disabled",
    "lora_params",
    "merge_lora",
    "save_lora_adapters",
    "without_lora",
]

DTypeLike = Any

DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

LORA_RANK_AXIS = "lora_rank"


class LoRAParam(nnx.LoRAParam):
    """The variable type of LoRA adapter matrices (a subclass of `nnx.Param` and of Flax's
    `nnx.LoRAParam`): filter on it to train only the adapters.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models.lora import LoRAParam
        >>> issubclass(LoRAParam, nnx.Param)
        True
    """


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Where and how large the adapters are.

    Attributes:
        rank: the rank ``r`` of ``B A``.
        alpha: scaling numerator; the update is ``(alpha / rank) * B A x``.
        target_modules: names of the `Linear` attributes to adapt (e.g. ``"q_proj"``,
            ``"lm_head"``); each must occur in the model.
        dropout: dropout rate on the adapter input (training mode only; 0 disables it).
        param_dtype: storage dtype of the adapters (default float32, also for bf16 models).
        layers: the indices of the decoder layers whose projections get adapters (negative
            indices count from the top: ``(-2, -1)`` is the last two layers); None: every layer.
            With a filter, only projections inside those layers are adapted (``lm_head`` is
            not), as PEFT's ``layers_to_transform``, the name it is saved under. Adapting only
            the top layers makes the backward pass stop there: the layers below carry no
            gradient.

    Example:
        >>> from raco_jax.models import LoRAConfig
        >>> LoRAConfig(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj")).scale
        2.0
        >>> LoRAConfig(rank=8, alpha=16.0, layers=[-1, -2]).layers
        (-2, -1)
    """

    rank: int
    alpha: float
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    dropout: float = 0.0
    param_dtype: str = "float32"
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        rank = self.rank
        if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank <= 0:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        object.__setattr__(self, "rank", int(rank))
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            raise TypeError(f"alpha must be a float, got {type(self.alpha).__name__}") from None
        if not np.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {self.alpha!r}")
        object.__setattr__(self, "alpha", alpha)
        targets = self.target_modules
        if isinstance(targets, str):
            targets = (targets,)
        targets = tuple(targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                f"target_modules must be a non-empty sequence of attribute names, got "
                f"{self.target_modules!r}"
            )
        object.__setattr__(self, "target_modules", targets)
        dropout = float(self.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", dropout)
        try:
            np.dtype(self.param_dtype)
        except TypeError:
            raise ValueError(f"param_dtype={self.param_dtype!r} is not a dtype") from None
        object.__setattr__(self, "param_dtype", np.dtype(self.param_dtype).name)
        object.__setattr__(self, "layers", _check_layers(self.layers))

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def resolved_layers(self, num_layers: int) -> tuple[int, ...] | None:
        """The adapted layers as non-negative indices of a model with ``num_layers`` layers
        (None: every layer).

        Raises:
            ValueError: an index outside ``[-num_layers, num_layers)``.

        Example:
            >>> from raco_jax.models import LoRAConfig
            >>> LoRAConfig(rank=2, alpha=2.0, layers=(0, -1)).resolved_layers(30)
            (0, 29)
        """
        if self.layers is None:
            return None
        outside = [i for i in self.layers if not -num_layers <= i < num_layers]
        if outside:
            raise ValueError(
                f"LoRA layers {outside} are outside the model's {num_layers} layers "
                f"(valid: {-num_layers}..{num_layers - 1})."
            )
        return tuple(sorted({i % num_layers for i in self.layers}))


def _check_layers(layers: Any) -> tuple[int, ...] | None:
    """``layers`` as a sorted tuple of distinct ints (None stays None)."""
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a sequence of ints or None, got {layers!r}")
    values = tuple(layers)
    if not values or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in values
    ):
        raise ValueError(f"layers must be a non-empty sequence of ints or None, got {layers!r}")
    return tuple(sorted({int(i) for i in values}))


class LoRALinear(Linear):
    """A `Linear` plus a low-rank update: ``W x + scale * B (A dropout(x))``.

    Holds the base layer's ``kernel`` (the same `nnx.Param` object), ``lora_a``
    ``[*in_features, rank]`` and ``lora_b`` ``[rank, *out_features]`` (`LoRAParam`), and the
    static flag ``lora_enabled`` (False: the base layer's output exactly).

    Args:
        base: the layer to adapt.
        rank: the adapter rank.
        alpha: the update is scaled by ``alpha / rank``.
        dropout: dropout rate on the adapter input (0: none).
        param_dtype: adapter storage dtype.
        rngs: random streams (``params`` for ``A``; ``dropout`` when ``dropout > 0``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models.decoder import Linear
        >>> from raco_jax.models.lora import LoRALinear
        >>> base = Linear((8,), (2, 4), axes=("embed", "heads", "head_dim"), rngs=nnx.Rngs(0))
        >>> layer = LoRALinear(base, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
        >>> layer.lora_a.shape, layer.lora_b.shape
        ((8, 2), (2, 2, 4))
        >>> x = jnp.ones((3, 8))
        >>> bool(jnp.allclose(layer(x), base(x)))   # B starts at zero
        True
    """

    def __init__(
        self,
        base: Linear,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        if not isinstance(base, Linear) or isinstance(base, LoRALinear):
            raise TypeError(f"base must be a (non-LoRA) Linear, got {type(base).__name__}")
        self.in_ndim = base.in_ndim
        self.dtype = base.dtype
        self.kernel = base.kernel
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scale = self.alpha / self.rank
        self.lora_enabled = True
        shape = tuple(base.kernel.shape)
        in_shape, out_shape = shape[: self.in_ndim], shape[self.in_ndim :]
        axes = logical_axes(base.kernel) or (None,) * len(shape)
        in_axes, out_axes = tuple(axes[: self.in_ndim]), tuple(axes[self.in_ndim :])
        bound = 1.0 / math.sqrt(math.prod(in_shape))
        a = jax.random.uniform(
            rngs.params(), (*in_shape, self.rank), jnp.float32, minval=-bound, maxval=bound
        )
        self.lora_a = LoRAParam(
            a.astype(param_dtype), out_sharding=(*in_axes, LORA_RANK_AXIS), eager_sharding=False
        )
        self.lora_b = LoRAParam(
            jnp.zeros((self.rank, *out_shape), param_dtype),
            out_sharding=(LORA_RANK_AXIS, *out_axes),
            eager_sharding=False,
        )
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def __call__(self, x: jax.Array, *, out_dtype: DTypeLike | None = None) -> jax.Array:
        y = super().__call__(x, out_dtype=out_dtype)
        if not self.lora_enabled:
            return y
        h = x if self.lora_dropout is None else self.lora_dropout(x)
        h = jnp.tensordot(
            h.astype(self.dtype), self.lora_a[...].astype(self.dtype), axes=self.in_ndim
        )
        delta = jnp.tensordot(
            h, self.lora_b[...].astype(self.dtype), axes=1, preferred_element_type=out_dtype
        )
        return y + (delta * jnp.asarray(self.scale, delta.dtype)).astype(y.dtype)

    def set_view(self, lora_enabled: bool | None = None) -> None:
        """Used by `nnx.view`: ``nnx.view(model, lora_enabled=False)`` turns adapters off.

        Example:
            >>> from flax import nnx
            >>> from raco_jax.models.decoder import Linear
            >>> from raco_jax.models.lora import LoRALinear
            >>> base = Linear((4,), (6,), axes=("embed", "mlp"), rngs=nnx.Rngs(0))
            >>> layer = LoRALinear(base, rank=2, alpha=2.0, rngs=nnx.Rngs(1))
            >>> nnx.view(layer, lora_enabled=False).lora_enabled, layer.lora_enabled
            (False, True)
        """
        if lora_enabled is not None:
            self.lora_enabled = bool(lora_enabled)

    def merged_kernel(self) -> jax.Array:
        """``kernel + scale * A B`` (computed in float32), in the kernel's dtype.

        Example:
            >>> from flax import nnx
            >>> from raco_jax.models.decoder import Linear
            >>> from raco_jax.models.lora import LoRALinear
            >>> base = Linear((4,), (6,), axes=("embed", "mlp"), rngs=nnx.Rngs(0))
            >>> LoRALinear(base, rank=2, alpha=2.0, rngs=nnx.Rngs(1)).merged_kernel().shape
            (4, 6)
        """
        kernel = self.kernel[...]
        update = jnp.tensordot(
            self.lora_a[...].astype(jnp.float32),
            self.lora_b[...].astype(jnp.float32),
            axes=1,
            precision=jax.lax.Precision.HIGHEST,
        )
        return (kernel.astype(jnp.float32) + self.scale * update).astype(kernel.dtype)


def _linear_children(model: nnx.Module) -> Iterator[tuple[tuple[Any, ...], nnx.Module, str]]:
    """(path of the parent, parent, attribute name) of every Linear attribute in ``model``."""
    for path, module in list(nnx.iter_modules(model)):
        for name, child in list(vars(module).items()):
            if isinstance(child, Linear):
                yield tuple(path), module, name


def _in_layers(path: tuple[Any, ...], layers: tuple[int, ...] | None) -> bool:
    """Whether a module path lies in one of the decoder ``layers`` (None: anywhere)."""
    if layers is None:
        return True
    return len(path) >= 2 and path[0] == "layers" and path[1] in layers


def apply_lora(model: Decoder, config: LoRAConfig, rngs: nnx.Rngs) -> Decoder:
    """Add LoRA adapters to ``model`` in place (and return it).

    Every `Linear` attribute of the model whose name is in ``config.target_modules`` (inside the
    decoder layers ``config.layers``, when given) becomes a `LoRALinear` sharing the original
    kernel; the forward pass is unchanged until ``lora_b``
    moves away from zero. Train with ``nnx.Optimizer(model, tx, wrt=LoRAParam)``.

    Args:
        model: a `Decoder` (without adapters yet).
        config: rank, alpha, target modules, dropout and adapter dtype.
        rngs: random streams: ``params`` initialises ``A`` (and ``dropout`` drives adapter
            dropout when ``config.dropout > 0``).

    Returns:
        ``model``, now holding adapters.

    Raises:
        ValueError: naming the entries of ``target_modules`` that match no `Linear` attribute,
            or when the model already holds adapters.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, LoRAParam, apply_lora, lora_params
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> ids = jnp.array([[1, 2, 3]])
        >>> before = model(ids)
        >>> model = apply_lora(model, LoRAConfig(rank=4, alpha=8.0), rngs=nnx.Rngs(1))
        >>> bool(jnp.allclose(model(ids), before))
        True
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=LoRAParam)
        >>> grads = nnx.grad(lambda m: m(ids)[0, -1, 0], argnums=nnx.DiffState(0, LoRAParam))(model)
        >>> _ = optimizer.update(model, grads)    # only the adapters move
        >>> bool(jnp.allclose(model(ids), before))
        False
        >>> sum(x.size for x in jax.tree.leaves(lora_params(model)))   # 7 projections
        1088
        >>> c3 = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                  intermediate_size=32, num_layers=3, num_heads=2)
        >>> top = apply_lora(Decoder(c3, rngs=nnx.Rngs(0)),
        ...                  LoRAConfig(rank=4, alpha=8.0, layers=(-1,)), rngs=nnx.Rngs(1))
        >>> sorted(lora_params(top)["layers"])   # the last layer only
        [2]
    """
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config must be a LoRAConfig, got {type(config).__name__}")
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module (a Decoder), got {type(model).__name__}")
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
    targets = set(config.target_modules)
    layers = config.resolved_layers(model.config.num_layers) if config.layers else None
    found: set[str] = set()
    available: set[str] = set()
    replacements = []
    for path, parent, name in _linear_children(model):
        child = getattr(parent, name)
        if isinstance(child, LoRALinear):
            raise ValueError(
                "model already holds LoRA adapters (merge_lora first to stack another set)"
            )
        if not _in_layers(path, layers):
            continue
        available.add(name)
        if name in targets:
            found.add(name)
            replacements.append((parent, name, child))
    missing = sorted(targets - found)
    if missing:
        raise ValueError(
            f"target_modules {missing} match no Linear layer of the model; available: "
            f"{sorted(available)}"
        )
    param_dtype = jnp.dtype(config.param_dtype)
    for parent, name, child in replacements:
        adapted = LoRALinear(
            child,
            rank=config.rank,
            alpha=config.alpha,
            dropout=config.dropout,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        setattr(parent, name, adapted)
    return model


def lora_params(model: nnx.Module) -> nnx.State:
    """The adapter parameters only: ``nnx.state(model, LoRAParam)``.

    Example:
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, apply_lora, lora_params
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = apply_lora(Decoder(c, rngs=nnx.Rngs(0)),
        ...                    LoRAConfig(rank=2, alpha=2.0, target_modules=("q_proj",)),
        ...                    rngs=nnx.Rngs(1))
        >>> sorted(lora_params(model)["layers"][0]["self_attn"]["q_proj"])
        ['lora_a', 'lora_b']
    """
    return nnx.state(model, LoRAParam)


def _lora_layers(model: nnx.Module) -> list[LoRALinear]:
    return [module for _, module in nnx.iter_modules(model) if isinstance(module, LoRALinear)]


def without_lora(model: Decoder) -> Decoder:
    """A view of ``model`` with every adapter off: the base model, sharing the same arrays.

    Nothing is copied and ``model`` itself is unchanged; use it for the frozen reference policy
    of DPO (also inside a jitted loss: no gradient reaches the adapters through it).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, apply_lora, without_lora
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = Decoder(c, rngs=nnx.Rngs(0))
        >>> ids = jnp.array([[1, 2, 3]])
        >>> base = model(ids)
        >>> model = apply_lora(model, LoRAConfig(rank=2, alpha=2.0), rngs=nnx.Rngs(1))
        >>> model.layers[0].mlp.up_proj.lora_b[...] = jnp.ones((2, 32))
        >>> bool(jnp.allclose(without_lora(model)(ids), base)), bool(jnp.allclose(model(ids), base))
        (True, False)
    """
    return nnx.view(model, only=LoRALinear, lora_enabled=False)


@contextlib.contextmanager
def lora_disabled(model: nnx.Module) -> Iterator[nnx.Module]:
    """Context manager: the adapters of ``model`` are off inside the block (restored after).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, apply_lora, lora_disabled
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = apply_lora(Decoder(c, rngs=nnx.Rngs(0)), LoRAConfig(rank=2, alpha=2.0),
        ...                    rngs=nnx.Rngs(1))
        >>> with lora_disabled(model):
        ...     model.layers[0].self_attn.q_proj.lora_enabled
        False
        >>> model.layers[0].self_attn.q_proj.lora_enabled
        True
    """
    layers = _lora_layers(model)
    previous = [layer.lora_enabled for layer in layers]
    for layer in layers:
        layer.lora_enabled = False
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, previous, strict=True):
            layer.lora_enabled = enabled


def merge_lora(model: Decoder) -> Decoder:
    """A plain `Decoder` with every adapter folded in: ``kernel + (alpha / rank) * A B``.

    Adapters are merged whether or not they are currently enabled; ``model`` is unchanged. The
    result has no `LoRAParam`, so `raco_jax.models.save_pretrained` exports it as an ordinary
    Hugging Face checkpoint.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, LoRAParam, apply_lora, merge_lora
        >>> c = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> model = apply_lora(Decoder(c, rngs=nnx.Rngs(0)), LoRAConfig(rank=2, alpha=4.0),
        ...                    rngs=nnx.Rngs(1))
        >>> model.layers[0].self_attn.v_proj.lora_b[...] = 0.1 * jnp.ones((2, 2, 8))
        >>> merged = merge_lora(model)
        >>> type(merged).__name__, len(nnx.state(merged, LoRAParam))
        ('Decoder', 0)
        >>> ids = jnp.array([[1, 2, 3]])
        >>> bool(jnp.allclose(merged(ids), model(ids), atol=1e-5))
        True
    """
    if not isinstance(model, Decoder):
        raise TypeError(f"model must be a Decoder, got {type(model).__name__}")
    config = model.config

    def build() -> Decoder:
        return Decoder(
            config,
            dtype=model.dtype,
            param_dtype=model.param_dtype,
            remat=model.remat,
            rngs=nnx.Rngs(0),
        )

    graphdef, abstract_state = nnx.split(nnx.eval_shape(build))
    merged_kernels = {
        (*tuple(path), "kernel"): module.merged_kernel()
        for path, module in nnx.iter_modules(model)
        if isinstance(module, LoRALinear)
    }
    base = {
        tuple(path): variable
        for path, variable in nnx.to_flat_state(
            nnx.state(model, nnx.All(nnx.Param, nnx.Not(LoRAParam)))
        )
    }
    filled = []
    for path, variable in nnx.to_flat_state(abstract_state):
        path = tuple(path)
        if path not in base:  # pragma: no cover - the module trees disagree
            raise RuntimeError(f"model has no parameter at {path}")
        value = merged_kernels.get(path)
        if value is None:
            value = base[path].get_value()
        filled.append((path, variable.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def _adapter_stems(model: Decoder) -> dict[tuple[Any, ...], str]:
    """Module path of every `LoRALinear` -> its PEFT tensor stem (``base_model.model.<key>``)."""
    by_path = {path: key for key, (path, _) in hf_param_map(model.config).items()}
    stems = {}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, LoRALinear):
            key = by_path[(*tuple(path), "kernel")]
            stems[tuple(path)] = "base_model.model." + key[: -len(".weight")]
    return stems


def save_lora_adapters(
    model: Decoder, directory: Any, config: LoRAConfig, base_model: str = ""
) -> None:
    """Write the adapters alone in PEFT layout: ``adapter_model.safetensors`` (float32,
    ``lora_A [r, in]`` / ``lora_B [out, r]`` per projection) and ``adapter_config.json``.

    PEFT (``PeftModel.from_pretrained``) and :func:`load_lora_adapters` read the directory.

    Args:
        model: a `Decoder` holding adapters (:func:`apply_lora`).
        directory: output directory (created if needed).
        config: the adapters' :class:`LoRAConfig` (rank, alpha, target modules).
        base_model: written as ``base_model_name_or_path``.

    Example:
        >>> import os, tempfile
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import LoRAConfig, apply_lora, save_lora_adapters
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> lora = LoRAConfig(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj"))
        >>> model = apply_lora(Decoder(c, rngs=nnx.Rngs(0)), lora, rngs=nnx.Rngs(1))
        >>> d = tempfile.mkdtemp()
        >>> save_lora_adapters(model, d, lora)
        >>> sorted(os.listdir(d))
        ['adapter_config.json', 'adapter_model.safetensors']
    """
    stems = _adapter_stems(model)
    if not stems:
        raise ValueError("model holds no LoRA adapters: nothing to save (apply_lora first).")
    modules = dict((tuple(path), m) for path, m in nnx.iter_modules(model))
    tensors = {}
    for path, stem in stems.items():
        module = modules[path]
        a = np.asarray(jax.device_get(module.lora_a[...]), np.float32)
        b = np.asarray(jax.device_get(module.lora_b[...]), np.float32)
        rank = a.shape[-1]
        tensors[f"{stem}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank).T)
        tensors[f"{stem}.lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1).T)
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, str(out / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model),
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": list(config.target_modules),
        "layers_to_transform": None
        if config.layers is None
        else list(config.resolved_layers(model.config.num_layers)),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter_config, indent=2) + "\n")


def load_lora_adapters(model: Decoder, directory: Any) -> Decoder:
    """Add the PEFT-layout adapters saved in ``directory`` to ``model`` (in place; returned).

    The inverse of :func:`save_lora_adapters` (and reads PEFT's own ``save_pretrained`` output for
    the same base model): :func:`apply_lora` with the saved rank, alpha and target modules, then
    every ``lora_A`` / ``lora_B`` tensor into its layer, keeping each adapter's sharding.

    Args:
        model: the base `Decoder` the adapters were trained on, without adapters.
        directory: holds ``adapter_config.json`` and ``adapter_model.safetensors``.

    Returns:
        ``model``, now holding the loaded adapters.

    Raises:
        FileNotFoundError: a file is missing. ValueError: a tensor is missing, has the wrong
            shape, or matches no adapted layer (a different base model).

    Example:
        >>> import tempfile
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from raco_jax.models import Decoder, ModelConfig
        >>> from raco_jax.models.lora import (LoRAConfig, apply_lora, load_lora_adapters,
        ...                                   save_lora_adapters)
        >>> c = ModelConfig(model_type="llama", vocab_size=32, hidden_size=16,
        ...                 intermediate_size=32, num_layers=1, num_heads=2)
        >>> lora = LoRAConfig(rank=2, alpha=4.0, target_modules=("q_proj", "v_proj"))
        >>> trained = apply_lora(Decoder(c, rngs=nnx.Rngs(0)), lora, rngs=nnx.Rngs(1))
        >>> trained.layers[0].self_attn.v_proj.lora_b[...] = 0.1 * jnp.ones((2, 2, 8))
        >>> d = tempfile.mkdtemp()
        >>> save_lora_adapters(trained, d, lora)
        >>> loaded = load_lora_adapters(Decoder(c, rngs=nnx.Rngs(0)), d)
        >>> ids = jnp.array([[1, 2, 3]])
        >>> bool(jnp.allclose(loaded(ids), trained(ids), atol=1e-6))
        True
    """
    root = pathlib.Path(directory)
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(f"no {name} in {root}: not a LoRA adapter directory.")
    saved = json.loads((root / ADAPTER_CONFIG_FILE).read_text())
    targets = saved["target_modules"]
    layers = saved.get("layers_to_transform")
    config = LoRAConfig(
        rank=int(saved["r"]),
        alpha=float(saved["lora_alpha"]),
        target_modules=tuple([targets] if isinstance(targets, str) else targets),
        layers=[layers] if isinstance(layers, int) else layers,
    )
    apply_lora(model, config, rngs=nnx.Rngs(0))
    tensors = safetensors.numpy.load_file(str(root / ADAPTER_WEIGHTS_FILE))
    modules = dict((tuple(path), m) for path, m in nnx.iter_modules(model))
    used = set()
    for path, stem in _adapter_stems(model).items():
        module = modules[path]
        for attr, suffix in (("lora_a", "lora_A"), ("lora_b", "lora_B")):
            key = f"{stem}.{suffix}.weight"
            if key not in tensors:
                raise ValueError(f"{root / ADAPTER_WEIGHTS_FILE} lacks {key}.")
            variable = getattr(module, attr)
            target_shape = tuple(variable.shape)
            value = tensors[key].T  # PEFT stores A as [r, in] and B as [out, r]
            if value.size != math.prod(target_shape):
                raise ValueError(
                    f"{key} has shape {tensors[key].shape}; the model's adapter needs "
                    f"{target_shape} (a different base model or rank?)."
                )
            current = variable[...]
            array = jnp.asarray(value.reshape(target_shape), current.dtype)
            sharding = getattr(current, "sharding", None)
            variable[...] = jax.device_put(array, sharding) if sharding is not None else array
            used.add(key)
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(
            f"{len(unused)} adapter tensors match no adapted layer (e.g. {unused[0]}): the "
            "adapters belong to a different base model."
        )
    return model
