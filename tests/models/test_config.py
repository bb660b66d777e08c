"""ModelConfig: transformers-4 and -5 spellings, to_hf round trips, clear errors; RoPE tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raco_jax.models import ModelConfig, RopeConfig
from raco_jax.models.rope import inverse_frequencies

LLAMA31_TF4 = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "attention_bias": False,
    "mlp_bias": False,
    "hidden_act": "silu",
}

GEMMA3_MM_TF4 = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "torch_dtype": "bfloat16",
    "text_config": {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_attention_heads": 8,
        "num_hidden_layers": 34,
        "num_key_value_heads": 4,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
}


def _tf5(config_dict: dict) -> dict:
    """What transformers 5 writes for this dict (its own loader as the spelling oracle)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**config_dict).to_dict()


def test_llama31_transformers4_spelling() -> None:
    config = ModelConfig.from_hf(LLAMA31_TF4)
    assert config.model_type == "llama"
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (32, 8, 128)
    assert config.rope == RopeConfig(
        theta=500000.0,
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    assert config.dtype == "bfloat16"
    assert config.eos_token_id == (128001, 128008, 128009)
    assert not config.tie_word_embeddings


def test_transformers4_and_5_spellings_agree() -> None:
    pytest.importorskip("transformers")
    for raw in (LLAMA31_TF4, GEMMA3_MM_TF4):
        tf5 = _tf5(raw)
        assert "rope_parameters" in json.dumps(tf5)
        tf5["dtype"] = raw["torch_dtype"]  # transformers drops the deprecated torch_dtype kwarg
        assert ModelConfig.from_hf(tf5) == ModelConfig.from_hf(raw)


def test_gemma3_multimodal_reads_text_config_with_hf_defaults() -> None:
    config = ModelConfig.from_hf(GEMMA3_MM_TF4)
    assert config.model_type == "gemma3_text"
    assert config.vocab_size == 262208 and config.head_dim == 256
    assert config.query_pre_attn_scalar == 256
    assert config.tie_word_embeddings
    assert config.sliding_window == 1024
    # sliding_window_pattern 6: every sixth layer is global
    assert config.layer_types[:6] == ("sliding_attention",) * 5 + ("full_attention",)
    assert config.rope == RopeConfig(theta=1e6, rope_type="linear", factor=8.0)
    assert config.local_rope == RopeConfig(theta=1e4)
    assert config.dtype == "bfloat16"


def test_gemma3_legacy_rope_fields_and_pattern() -> None:
    raw = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 4,
        "rope_theta": 2e6,
        "rope_local_base_freq": 5e4,
        "sliding_window_pattern": 2,
        "final_logit_softcapping": 30.0,
    }
    config = ModelConfig.from_hf(raw)
    assert config.layer_types == ("sliding_attention", "full_attention") * 2
    assert config.rope.theta == 2e6 and config.local_rope.theta == 5e4
    assert config.final_logit_softcapping == 30.0


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(
            model_type="llama",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=True,
            rope=RopeConfig(
                theta=5e5, rope_type="llama3", factor=8.0, original_max_position_embeddings=64
            ),
            bos_token_id=1,
            eos_token_id=(2, 3),
        ),
        ModelConfig(
            model_type="qwen3",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=96,
            num_layers=3,
            num_heads=4,
            head_dim=32,
            rope=RopeConfig(theta=1e6),
            dtype="bfloat16",
        ),
        ModelConfig(
            model_type="gemma3_text",
            vocab_size=128,
            hidden_size=64,
            intermediate_size=96,
            num_layers=3,
            num_heads=4,
            num_kv_heads=1,
            head_dim=16,
            layer_types=("sliding_attention", "full_attention", "sliding_attention"),
            sliding_window=8,
            rope=RopeConfig(theta=1e6, rope_type="linear", factor=4.0),
            local_rope=RopeConfig(theta=1e4),
            query_pre_attn_scalar=24,
            final_logit_softcapping=30.0,
            pad_token_id=0,
        ),
    ],
    ids=["llama", "qwen3", "gemma3"],
)
def test_to_hf_round_trip_and_transformers_loads_it(config: ModelConfig) -> None:
    assert ModelConfig.from_hf(config.to_hf()) == config
    pytest.importorskip("transformers")
    from transformers import AutoConfig

    hf = AutoConfig.for_model(**config.to_hf())
    assert hf.model_type == config.model_type
    assert hf.num_hidden_layers == config.num_layers
    assert hf.head_dim == config.head_dim
    assert ModelConfig.from_hf(hf.to_dict()) == config


def test_from_hf_reads_paths(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA31_TF4))
    assert ModelConfig.from_hf(tmp_path) == ModelConfig.from_hf(tmp_path / "config.json")
    with pytest.raises(ValueError, match="config file not found"):
        ModelConfig.from_hf(tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_hf(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "mistral"}, "model_type='mistral' is not supported"),
        ({"model_type": None}, "no 'model_type'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type='yarn'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_type='dynamic'"),
        (
            {"rope_scaling": None, "rope_parameters": {"rope_type": "longrope"}},
            "rope_parameters.rope_type='longrope'",
        ),
        ({"rope_scaling": {"rope_type": "linear"}}, "rope_scaling.factor is required"),
        ({"attention_bias": True}, "attention_bias=True"),
        ({"mlp_bias": True}, "mlp_bias=True"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_local_experts": 8}, "num_local_experts=8"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
        ({"num_attention_heads": 32, "num_key_value_heads": 5}, "num_kv_heads=5"),
    ],
)
def test_unsupported_fields_name_the_field(change: dict, message: str) -> None:
    raw = {**LLAMA31_TF4, **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ModelConfig.from_hf(raw)


def test_unsupported_family_features() -> None:
    qwen = {"model_type": "qwen3", "use_sliding_window": True, "sliding_window": 4096}
    with pytest.raises(ValueError, match="use_sliding_window"):
        ModelConfig.from_hf(qwen)
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        ModelConfig.from_hf({"model_type": "gemma3_text", "use_bidirectional_attention": True})
    with pytest.raises(
        ValueError, match=r"text_config\.rope_parameters\.full_attention\.rope_type"
    ):
        ModelConfig.from_hf(
            {
                "model_type": "gemma3",
                "text_config": {
                    "rope_parameters": {
                        "full_attention": {"rope_type": "yarn", "factor": 2.0},
                        "sliding_attention": {"rope_type": "default"},
                    }
                },
            }
        )
    with pytest.raises(ValueError, match="sliding-window layers are only supported"):
        ModelConfig(
            model_type="llama",
            vocab_size=8,
            hidden_size=8,
            intermediate_size=8,
            num_layers=1,
            num_heads=1,
            layer_types=("sliding_attention",),
        )
    with pytest.raises(ValueError, match="layer_types has 1 entries"):
        ModelConfig(
            model_type="gemma3_text",
            vocab_size=8,
            hidden_size=8,
            intermediate_size=8,
            num_layers=2,
            num_heads=1,
            layer_types=("full_attention",),
        )


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "default", "rope_theta": 500000.0},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
    ],
)
def test_inverse_frequencies_match_transformers(rope_parameters: dict) -> None:
    pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = LlamaConfig(
        hidden_size=512, num_attention_heads=4, rope_parameters=dict(rope_parameters)
    )
    ours = ModelConfig.from_hf(hf_config.to_dict())
    if rope_parameters["rope_type"] == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        expected = LlamaRotaryEmbedding.compute_default_rope_parameters(hf_config)[0]
    else:
        expected = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](hf_config, "cpu")[0]
    # float32 pow may differ from torch's by one ulp on some platforms
    np.testing.assert_allclose(inverse_frequencies(ours.rope, 128), expected.numpy(), rtol=2.5e-7)
