"""Model configuration for the raco_jax decoders (Llama 3, Qwen 3, Gemma 3 text).

`ModelConfig` is a frozen (hashable) dataclass, so it can sit on an `nnx.Module` as static data and
be used as a static argument of `jax.jit`. `ModelConfig.from_hf` reads a Hugging Face
``config.json`` in both the transformers-4 spellings (``rope_theta``/``rope_scaling``,
``torch_dtype``, ``rope_local_base_freq``, ``sliding_window_pattern``) and the transformers-5
spellings (``rope_parameters``, per layer type for Gemma 3, ``dtype``); `ModelConfig.to_hf`
writes the transformers-5 spelling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FULL_ATTENTION",
    "SLIDING_ATTENTION",
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_ROPE_TYPES",
    "ModelConfig",
    "RopeConfig",
]

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "gemma3_text")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}

# Defaults of the transformers config classes, used for fields a config.json leaves out.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
    },
    "qwen3": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    },
    "gemma3_text": {
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
}


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding parameters for one layer type.

    The inverse frequencies are ``theta ** (-2i / head_dim)``, then rescaled by ``rope_type``:
    ``"default"`` (none), ``"linear"`` (divided by ``factor``) or ``"llama3"`` (Llama 3.1
    frequency-dependent scaling with ``low_freq_factor``, ``high_freq_factor`` and
    ``original_max_position_embeddings``).

    Example:
        >>> from raco_jax.models import RopeConfig
        >>> RopeConfig(theta=500_000.0, rope_type="llama3", factor=8.0,
        ...            original_max_position_embeddings=8192).rope_type
        'llama3'
    """

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope_type={self.rope_type!r} is not supported; expected one of "
                f"{SUPPORTED_ROPE_TYPES}"
            )
        if not self.theta > 0:
            raise ValueError(f"rope theta must be positive, got {self.theta!r}")
        if not self.factor > 0:
            raise ValueError(f"rope factor must be positive, got {self.factor!r}")
        if self.rope_type == "llama3":
            if self.original_max_position_embeddings is None:
                raise ValueError(
                    "rope_type='llama3' needs original_max_position_embeddings (got None)"
                )
            if not self.high_freq_factor > self.low_freq_factor:
                raise ValueError(
                    "rope_type='llama3' needs high_freq_factor > low_freq_factor, got "
                    f"{self.high_freq_factor} and {self.low_freq_factor}"
                )

    def to_hf(self) -> dict[str, Any]:
        """The transformers-5 ``rope_parameters`` dict for these parameters.

        Example:
            >>> from raco_jax.models import RopeConfig
            >>> RopeConfig(theta=1e4, rope_type="linear", factor=2.0).to_hf()
            {'rope_type': 'linear', 'rope_theta': 10000.0, 'factor': 2.0}
        """
        out: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": float(self.theta)}
        if self.rope_type in ("linear", "llama3"):
            out["factor"] = float(self.factor)
        if self.rope_type == "llama3":
            out["low_freq_factor"] = float(self.low_freq_factor)
            out["high_freq_factor"] = float(self.high_freq_factor)
            out["original_max_position_embeddings"] = int(self.original_max_position_embeddings)
        return out


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one decoder: a Llama 3, Qwen 3 or Gemma 3 (text) model.

    The family (``model_type``) fixes the block structure; the other fields are sizes and the
    few numerical options the three families expose:

    * ``"llama"``: RMSNorm ``w * x_hat``, SwiGLU MLP, GQA, RoPE (default, linear or llama3
      scaling), optional tied ``lm_head``.
    * ``"qwen3"``: as Llama plus per-head RMSNorm of queries and keys (before RoPE).
    * ``"gemma3_text"``: RMSNorm ``(1 + w) * x_hat``, embeddings scaled by
      ``sqrt(hidden_size)``, four norms per layer plus q/k norms, GeGLU (tanh gelu), attention
      scale ``query_pre_attn_scalar ** -0.5``, sliding-window and full layers (``layer_types``)
      with their own RoPE (``local_rope`` for sliding layers, ``rope`` for full layers),
      optional tanh soft-capping of the final logits (``final_logit_softcapping``).
      ``attn_logit_softcapping`` is read and written back but, as in transformers' Gemma 3
      (which never passes it to its attention), not applied.

    Fields left as ``None`` are derived in ``__post_init__``: ``num_kv_heads`` defaults to
    ``num_heads``, ``head_dim`` to ``hidden_size // num_heads``, ``layer_types`` to all full
    attention (Gemma 3: every sixth layer full, the others sliding); for Gemma 3,
    ``sliding_window`` defaults to 4096, ``query_pre_attn_scalar`` to ``head_dim`` and
    ``local_rope`` to theta 1e4 (`from_hf` uses the transformers defaults instead).

    Example:
        >>> from raco_jax.models import ModelConfig
        >>> config = ModelConfig(model_type="llama", vocab_size=128, hidden_size=64,
        ...                      intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
        >>> config.head_dim, config.layer_types
        (16, ('full_attention', 'full_attention'))
        >>> ModelConfig.from_hf(config.to_hf()) == config
        True
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    rope: RopeConfig = RopeConfig()
    local_rope: RopeConfig | None = None
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None
    query_pre_attn_scalar: float | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type={self.model_type!r} is not supported; expected one of "
                f"{(*SUPPORTED_MODEL_TYPES, 'gemma3')} ('gemma3' multimodal configs are read "
                "through ModelConfig.from_hf, which takes their text_config)"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_kv_heads is None:
            set_(self, "num_kv_heads", self.num_heads)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"head_dim is None and hidden_size={self.hidden_size} is not divisible by "
                    f"num_heads={self.num_heads}; give head_dim explicitly"
                )
            set_(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a positive multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"head_dim must be a positive even int, got {self.head_dim}")
        if isinstance(self.eos_token_id, list):
            set_(self, "eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.rope, Mapping):
            set_(self, "rope", RopeConfig(**self.rope))
        if isinstance(self.local_rope, Mapping):
            set_(self, "local_rope", RopeConfig(**self.local_rope))
        if self.layer_types is None:
            if self.is_gemma:
                types = tuple(
                    SLIDING_ATTENTION if (i + 1) % 6 else FULL_ATTENTION
                    for i in range(self.num_layers)
                )
            else:
                types = (FULL_ATTENTION,) * self.num_layers
            set_(self, "layer_types", types)
        else:
            set_(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_layers={self.num_layers}"
            )
        for i, layer_type in enumerate(self.layer_types):
            if layer_type not in (FULL_ATTENTION, SLIDING_ATTENTION):
                raise ValueError(
                    f"layer_types[{i}]={layer_type!r}; expected {FULL_ATTENTION!r} or "
                    f"{SLIDING_ATTENTION!r}"
                )
        if SLIDING_ATTENTION in self.layer_types and not self.is_gemma:
            raise ValueError(
                "layer_types: sliding-window layers are only supported for gemma3_text, "
                f"not for model_type={self.model_type!r}"
            )
        if self.is_gemma:
            if self.sliding_window is None:
                set_(self, "sliding_window", 4096)
            if not isinstance(self.sliding_window, int) or self.sliding_window <= 0:
                raise ValueError(
                    f"sliding_window must be a positive int, got {self.sliding_window!r}"
                )
        elif self.sliding_window is not None:
            raise ValueError(
                f"sliding_window is only supported for gemma3_text, not for "
                f"model_type={self.model_type!r}"
            )
        if self.is_gemma and self.local_rope is None:
            set_(self, "local_rope", RopeConfig(theta=10000.0))
        if self.is_gemma and self.query_pre_attn_scalar is None:
            set_(self, "query_pre_attn_scalar", float(self.head_dim))
        elif self.query_pre_attn_scalar is not None:
            set_(self, "query_pre_attn_scalar", float(self.query_pre_attn_scalar))
        if not self.is_gemma:
            for name in (
                "local_rope",
                "query_pre_attn_scalar",
                "attn_logit_softcapping",
                "final_logit_softcapping",
            ):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is only supported for gemma3_text, not for "
                        f"model_type={self.model_type!r}"
                    )
        for name in ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")

    # -- derived properties -------------------------------------------------------------------

    @property
    def is_gemma(self) -> bool:
        """True for the Gemma 3 family (``model_type == "gemma3_text"``)."""
        return self.model_type == "gemma3_text"

    @property
    def qk_norm(self) -> bool:
        """Whether queries and keys get a per-head RMSNorm before RoPE (Qwen 3, Gemma 3)."""
        return self.model_type in ("qwen3", "gemma3_text")

    @property
    def num_groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    @property
    def attention_scale(self) -> float:
        """The factor applied to ``q . k``: ``query_pre_attn_scalar ** -0.5`` or ``head_dim ** -0.5``."""
        if self.query_pre_attn_scalar is not None:
            return float(self.query_pre_attn_scalar) ** -0.5
        return float(self.head_dim) ** -0.5

    @property
    def embed_scale(self) -> float | None:
        """Gemma's ``sqrt(hidden_size)`` embedding multiplier (None for the other families)."""
        return math.sqrt(self.hidden_size) if self.is_gemma else None

    @property
    def hf_architecture(self) -> str:
        """The transformers class that loads this config (e.g. ``"LlamaForCausalLM"``)."""
        return _ARCHITECTURES[self.model_type]

    def rope_for(self, layer_type: str) -> RopeConfig:
        """The RoPE parameters used by layers of ``layer_type``.

        Example:
            >>> from raco_jax.models import ModelConfig
            >>> c = ModelConfig(model_type="gemma3_text", vocab_size=64, hidden_size=32,
            ...                 intermediate_size=64, num_layers=2, num_heads=2, head_dim=16)
            >>> c.rope_for("sliding_attention").theta
            10000.0
        """
        if layer_type == SLIDING_ATTENTION and self.local_rope is not None:
            return self.local_rope
        return self.rope

    # -- Hugging Face conversion ----------------------------------------------------------------

    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any]) -> ModelConfig:
        """Read a Hugging Face config (a ``config.json`` path, a directory holding one, or a dict).

        Accepts transformers-4 and transformers-5 spellings. Multimodal Gemma 3 configs
        (``model_type == "gemma3"``) yield their text model (``text_config``). Fields that do not
        change the forward pass (dropout, initializer range, ``use_cache``, ...) are ignored.

        Raises:
            ValueError: naming the field, for an unsupported ``model_type``, rope type, attention
                or MLP bias, mixture-of-experts fields, Qwen sliding windows, bidirectional
                attention, partial rotary embeddings or a non-standard activation.

        Example:
            >>> from raco_jax.models import ModelConfig
            >>> c = ModelConfig.from_hf({"model_type": "qwen3", "vocab_size": 256,
            ...     "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            ...     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            ...     "rope_theta": 1e6, "tie_word_embeddings": True})
            >>> c.rope.theta, c.tie_word_embeddings
            (1000000.0, True)
        """
        raw = _read_config_dict(source)
        if not isinstance(raw, Mapping):
            raise ValueError(f"config must be a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        if model_type is None:
            raise ValueError("config has no 'model_type' field")
        if model_type == "gemma3":
            text = raw.get("text_config")
            if not isinstance(text, Mapping):
                raise ValueError(
                    "model_type='gemma3' config needs a 'text_config' dict (the text model)"
                )
            text = dict(text)
            text.setdefault("model_type", "gemma3_text")
            if text["model_type"] != "gemma3_text":
                raise ValueError(
                    f"text_config.model_type={text['model_type']!r}; expected 'gemma3_text'"
                )
            for key in ("tie_word_embeddings", "torch_dtype", "dtype"):
                if text.get(key) is None and raw.get(key) is not None:
                    text[key] = raw[key]
            return _from_hf_text(text, prefix="text_config.")
        return _from_hf_text(dict(raw), prefix="")

    def to_hf(self) -> dict[str, Any]:
        """This config as a transformers-5 ``config.json`` dict (``rope_parameters``, ``dtype``).

        Example:
            >>> from raco_jax.models import ModelConfig
            >>> c = ModelConfig(model_type="qwen3", vocab_size=128, hidden_size=64,
            ...                 intermediate_size=128, num_layers=2, num_heads=4)
            >>> d = c.to_hf()
            >>> d["architectures"], d["rope_parameters"]["rope_type"]
            (['Qwen3ForCausalLM'], 'default')
        """
        out: dict[str, Any] = {
            "architectures": [self.hf_architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": (
                list(self.eos_token_id)
                if isinstance(self.eos_token_id, tuple)
                else self.eos_token_id
            ),
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
        }
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.model_type == "llama":
            out.update(hidden_act="silu", mlp_bias=False, rope_parameters=self.rope.to_hf())
        elif self.model_type == "qwen3":
            out.update(
                hidden_act="silu",
                rope_parameters=self.rope.to_hf(),
                use_sliding_window=False,
                sliding_window=None,
                max_window_layers=self.num_layers,
                layer_types=list(self.layer_types),
            )
        else:
            out.update(
                hidden_activation="gelu_pytorch_tanh",
                query_pre_attn_scalar=_int_if_integral(self.query_pre_attn_scalar),
                sliding_window=self.sliding_window if self.sliding_window is not None else 4096,
                layer_types=list(self.layer_types),
                rope_parameters={
                    FULL_ATTENTION: self.rope.to_hf(),
                    SLIDING_ATTENTION: self.rope_for(SLIDING_ATTENTION).to_hf(),
                },
                attn_logit_softcapping=self.attn_logit_softcapping,
                final_logit_softcapping=self.final_logit_softcapping,
                use_bidirectional_attention=False,
            )
        return out


# -- helpers ------------------------------------------------------------------------------------


def _int_if_integral(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _read_config_dict(source: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a config.json path, a directory or a dict, got {type(source).__name__}"
        )
    path = pathlib.Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"config file {path} is not valid JSON: {err}") from err


def _rope_from_hf(
    params: Mapping[str, Any] | None,
    *,
    theta_default: float,
    max_position_embeddings: int,
    field: str,
) -> RopeConfig:
    params = dict(params or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"{field}.rope_type={rope_type!r} is not supported; expected one of "
            f"{SUPPORTED_ROPE_TYPES}"
        )
    partial = params.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):
        raise ValueError(f"{field}.partial_rotary_factor={partial!r} is not supported (only 1.0)")
    theta = params.get("rope_theta")
    theta = float(theta_default if theta is None else theta)
    kwargs: dict[str, Any] = {"theta": theta, "rope_type": rope_type}
    if rope_type in ("linear", "llama3"):
        if params.get("factor") is None:
            raise ValueError(f"{field}.factor is required for rope_type={rope_type!r}")
        kwargs["factor"] = float(params["factor"])
    if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor"):
            if params.get(key) is None:
                raise ValueError(f"{field}.{key} is required for rope_type='llama3'")
            kwargs[key] = float(params[key])
        original = params.get("original_max_position_embeddings") or max_position_embeddings
        kwargs["original_max_position_embeddings"] = int(original)
    try:
        return RopeConfig(**kwargs)
    except ValueError as err:
        raise ValueError(f"{field}: {err}") from err


def _is_nested_rope(params: Any) -> bool:
    return isinstance(params, Mapping) and any(
        key in params for key in (FULL_ATTENTION, SLIDING_ATTENTION)
    )


def _from_hf_text(raw: dict[str, Any], *, prefix: str) -> ModelConfig:
    model_type = raw["model_type"]
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{prefix}model_type={model_type!r} is not supported; expected one of "
            f"{(*SUPPORTED_MODEL_TYPES, 'gemma3')}"
        )
    defaults = _HF_DEFAULTS[model_type]

    def get(key: str) -> Any:
        value = raw.get(key)
        return defaults.get(key) if value is None else value

    def get_token(key: str) -> Any:
        # Token ids may legitimately be null: only an absent key takes the default.
        return raw[key] if key in raw else defaults.get(key)

    # Features that change the forward pass and that these decoders do not implement.
    for key in ("attention_bias", "mlp_bias", "use_bidirectional_attention"):
        if raw.get(key):
            raise ValueError(f"{prefix}{key}={raw[key]!r} is not supported (expected false)")
    if model_type == "qwen3" and raw.get("use_sliding_window"):
        raise ValueError(
            f"{prefix}use_sliding_window=True is not supported for qwen3 (expected false)"
        )
    for key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size"):
        if raw.get(key):
            raise ValueError(
                f"{prefix}{key}={raw[key]!r}: mixture-of-experts models are not supported"
            )
    if raw.get("partial_rotary_factor") not in (None, 1, 1.0):
        raise ValueError(
            f"{prefix}partial_rotary_factor={raw['partial_rotary_factor']!r} is not supported"
        )
    if model_type == "gemma3_text":
        act_key = "hidden_activation" if "hidden_activation" in raw else "hidden_act"
        activation = raw.get(act_key) or "gelu_pytorch_tanh"
        allowed_acts: tuple[str, ...] = ("gelu_pytorch_tanh",)
    else:
        act_key = "hidden_act"
        activation = raw.get(act_key) or "silu"
        allowed_acts = ("silu", "swish")
    if activation not in allowed_acts:
        raise ValueError(
            f"{prefix}{act_key}={activation!r} is not supported for {model_type}; expected one of "
            f"{allowed_acts}"
        )

    max_pos = int(get("max_position_embeddings"))
    num_layers = int(get("num_hidden_layers"))
    rope_parameters = raw.get("rope_parameters")
    rope_scaling = raw.get("rope_scaling")
    local_rope = None
    if model_type == "gemma3_text":
        if _is_nested_rope(rope_parameters):
            full = dict(rope_parameters.get(FULL_ATTENTION) or {})
            sliding = dict(rope_parameters.get(SLIDING_ATTENTION) or {})
            full_field = f"{prefix}rope_parameters.{FULL_ATTENTION}"
            sliding_field = f"{prefix}rope_parameters.{SLIDING_ATTENTION}"
        else:
            full = dict(rope_parameters or {})
            sliding = {}
            full_field = f"{prefix}rope_parameters" if rope_parameters else f"{prefix}rope_scaling"
            sliding_field = f"{prefix}rope_local_base_freq"
        if rope_scaling:
            full.update(rope_scaling)
            full_field = f"{prefix}rope_scaling"
        rope = _rope_from_hf(
            full, theta_default=get("rope_theta"), max_position_embeddings=max_pos, field=full_field
        )
        local_rope = _rope_from_hf(
            sliding,
            theta_default=get("rope_local_base_freq"),
            max_position_embeddings=max_pos,
            field=sliding_field,
        )
    else:
        if _is_nested_rope(rope_parameters):
            rope_parameters = rope_parameters.get(FULL_ATTENTION)
        params = rope_scaling or rope_parameters
        field = f"{prefix}rope_scaling" if rope_scaling else f"{prefix}rope_parameters"
        rope = _rope_from_hf(
            params, theta_default=get("rope_theta"), max_position_embeddings=max_pos, field=field
        )

    layer_types = raw.get("layer_types")
    sliding_window = None
    query_pre_attn_scalar = None
    if model_type == "gemma3_text":
        if layer_types is None:
            pattern = raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or 6
            layer_types = [
                SLIDING_ATTENTION if (i + 1) % int(pattern) else FULL_ATTENTION
                for i in range(num_layers)
            ]
        sliding_window = int(get("sliding_window"))
        query_pre_attn_scalar = float(get("query_pre_attn_scalar"))
    elif model_type == "qwen3":
        # Without use_sliding_window, transformers ignores "sliding_attention" entries.
        layer_types = None
    else:
        layer_types = None

    eos = get_token("eos_token_id")
    dtype = raw.get("dtype") or raw.get("torch_dtype")
    try:
        return ModelConfig(
            model_type=model_type,
            vocab_size=int(get("vocab_size")),
            hidden_size=int(get("hidden_size")),
            intermediate_size=int(get("intermediate_size")),
            num_layers=num_layers,
            num_heads=int(get("num_attention_heads")),
            num_kv_heads=(
                int(get("num_key_value_heads")) if get("num_key_value_heads") is not None else None
            ),
            head_dim=int(get("head_dim")) if get("head_dim") is not None else None,
            rms_norm_eps=float(get("rms_norm_eps")),
            max_position_embeddings=max_pos,
            tie_word_embeddings=bool(get("tie_word_embeddings")),
            rope=rope,
            local_rope=local_rope,
            layer_types=tuple(layer_types) if layer_types is not None else None,
            sliding_window=sliding_window,
            query_pre_attn_scalar=query_pre_attn_scalar,
            attn_logit_softcapping=raw.get("attn_logit_softcapping"),
            final_logit_softcapping=raw.get("final_logit_softcapping"),
            bos_token_id=get_token("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=get_token("pad_token_id"),
            dtype=str(dtype) if dtype is not None else None,
        )
    except ValueError as err:
        if not prefix:
            raise
        raise ValueError(f"{prefix}{err}") from err
