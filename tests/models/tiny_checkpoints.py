"""Tiny random Hugging Face checkpoints (built with transformers + torch) for the model tests.

Each builder makes a seeded PyTorch model with eager attention, re-draws its weights so that
attention is far from uniform and every norm weight matters (HF's 0.02 init would hide RoPE or
norm bugs), saves it with ``save_pretrained`` (safetensors) and returns ``(directory, model)``.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

SEQ_LEN = 40  # longer than the llama3 original context (32) and the Gemma windows (6)
VOCAB = 256

LLAMA_KW: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
}


def _randomize(model: Any, *, seed: int, norm_center: float, std: float = 0.2) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                param.copy_(norm_center + 0.3 * noise)
            else:
                param.copy_(std * noise)


def _finish(model: Any, path: pathlib.Path) -> tuple[pathlib.Path, Any]:
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return path, model


def llama(
    path: pathlib.Path, *, tie: bool, seed: int = 0, std: float = 0.2
) -> tuple[pathlib.Path, Any]:
    """Llama 3: untied with llama3 rope scaling, or tied with linear scaling."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tie:
        rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    else:
        # original context 32 < SEQ_LEN; theta 1e4 and head_dim 16 put frequencies in all three
        # llama3 bands (kept, smoothed, divided by factor).
        rope = {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
            "rope_theta": 10000.0,
        }
    config = LlamaConfig(
        **LLAMA_KW,
        tie_word_embeddings=tie,
        rope_parameters=rope,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _randomize(model, seed=seed, norm_center=1.0, std=std)
    return _finish(model, path)


def qwen3(path: pathlib.Path, *, tie: bool = True, seed: int = 1) -> tuple[pathlib.Path, Any]:
    """Qwen 3 dense with q/k norms, tied embeddings by default."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        **LLAMA_KW,
        tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    _randomize(model, seed=seed, norm_center=1.0)
    return _finish(model, path)


GEMMA_TEXT_KW: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 128,
    "query_pre_attn_scalar": 16,
    "sliding_window": 6,
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
    "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    },
}


def gemma3(path: pathlib.Path, *, softcap: bool, seed: int = 2) -> tuple[pathlib.Path, Any]:
    """Gemma 3 text: 2 sliding (window 6) + 1 full layer, linear rope scaling on the full one."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    kw = dict(GEMMA_TEXT_KW)
    if softcap:
        kw.update(attn_logit_softcapping=2.0, final_logit_softcapping=5.0)
    config = Gemma3TextConfig(**kw, attn_implementation="eager")
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    _randomize(model, seed=seed, norm_center=0.0)
    return _finish(model, path)


def gemma3_multimodal(path: pathlib.Path, *, seed: int = 3) -> tuple[pathlib.Path, Any]:
    """A tiny Gemma3ForConditionalGeneration (SigLIP tower + projector + Gemma 3 text)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(
        GEMMA_TEXT_KW, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"]
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
        image_token_index=VOCAB - 1,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    _randomize(model, seed=seed, norm_center=0.0)
    return _finish(model, path)


def padded_batches(
    seed: int = 0, *, vocab: int = VOCAB - 8
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two [2, SEQ_LEN] batches: one right-padded, one left-padded (row 0 full, row 1 short)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(2, SEQ_LEN)).astype(np.int32)
    short = SEQ_LEN - 13
    right = np.ones((2, SEQ_LEN), np.int32)
    right[1, short:] = 0
    left = np.ones((2, SEQ_LEN), np.int32)
    left[1, : SEQ_LEN - short] = 0
    return {"right": (ids * right, right), "left": (ids * left, left)}


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """cumsum(mask) - 1 clipped at 0: the positions both implementations are given."""
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)


def hf_logits(model: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float32 logits of a transformers model given explicit mask and position ids."""
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            position_ids=torch.from_numpy(positions_from_mask(mask)),
        )
    return out.logits.float().numpy()
