"""Checkpoint IO: save -> transformers load round trips, shards, multimodal keys, clear errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="HF IO tests need torch")
pytest.importorskip("transformers", reason="HF IO tests need transformers")

import safetensors.numpy
from models import tiny_checkpoints as tiny

from raco_jax.models import (
    ModelConfig,
    from_pretrained,
    load_hf_tensors,
    model_from_tensors,
    read_safetensors,
    save_pretrained,
)


def _auto_model(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()


@pytest.mark.parametrize(
    "builder",
    [
        lambda p: tiny.llama(p, tie=False),
        tiny.qwen3,
        tiny.gemma3_multimodal,
    ],
    ids=["llama3_untied", "qwen3_tied", "gemma3_multimodal_to_text"],
)
def test_save_pretrained_round_trips_through_transformers(builder, tmp_path) -> None:
    source, hf_model = builder(tmp_path / "source")
    model, config = from_pretrained(source)
    out = tmp_path / "saved"
    save_pretrained(model, config, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((out / "config.json").read_text())
    assert "rope_parameters" in saved and "rope_theta" not in saved
    assert saved["dtype"] == "float32"
    reloaded = _auto_model(out)
    assert type(reloaded).__name__ == config.hf_architecture
    for ids, mask in tiny.padded_batches().values():
        expected = tiny.hf_logits(hf_model, ids, mask)
        got = tiny.hf_logits(reloaded, ids, mask)
        real = mask.astype(bool)
        np.testing.assert_allclose(got[real], expected[real], atol=1e-5, rtol=0)
    # and back into JAX: identical parameters
    again, again_config = from_pretrained(out)
    assert again_config == dataclasses.replace(config, dtype="float32")
    np.testing.assert_array_equal(
        np.asarray(again.layers[1].mlp.down_proj.kernel[...]),
        np.asarray(model.layers[1].mlp.down_proj.kernel[...]),
    )


def test_sharded_checkpoint_with_index(tmp_path) -> None:
    source, hf_model = tiny.gemma3(tmp_path / "source", softcap=True)
    model, config = from_pretrained(source)
    out = tmp_path / "sharded"
    save_pretrained(model, config, out, max_shard_bytes=200_000)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    reloaded = _auto_model(out)  # transformers reads our index
    ids, mask = tiny.padded_batches()["left"]
    real = mask.astype(bool)
    np.testing.assert_allclose(
        tiny.hf_logits(reloaded, ids, mask)[real],
        tiny.hf_logits(hf_model, ids, mask)[real],
        atol=1e-5,
        rtol=0,
    )
    tensors = load_hf_tensors(out)
    assert set(tensors) == set(load_hf_tensors(source))
    # bfloat16 storage: the dtype is recorded and transformers reads it
    out16 = tmp_path / "bf16"
    save_pretrained(model, config, out16, dtype="bfloat16")
    assert json.loads((out16 / "config.json").read_text())["dtype"] == "bfloat16"
    assert (
        read_safetensors(out16 / "model.safetensors")["model.norm.weight"].dtype.name == "bfloat16"
    )


def test_multimodal_vision_keys_are_skipped_and_counted(tmp_path, caplog) -> None:
    source, _ = tiny.gemma3_multimodal(tmp_path)
    tensors = load_hf_tensors(source)
    vision = [k for k in tensors if "vision_tower" in k or "multi_modal_projector" in k]
    assert vision and any(k.startswith("language_model.") for k in tensors)
    config = ModelConfig.from_hf(source)
    with caplog.at_level(logging.WARNING, logger="raco_jax.models.hf_io"):
        model_from_tensors(config, tensors)
    assert f"skipped {len(vision)} vision/projector tensors" in caplog.text
    # the transformers-5 in-memory layout (model.language_model.*) is accepted too
    renamed = {
        k.replace("language_model.model.", "model.language_model."): v for k, v in tensors.items()
    }
    model_from_tensors(config, renamed)


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
    directory, _ = tiny.llama(tmp_path_factory.mktemp("llama"), tie=False)
    return directory


def test_missing_tensor_is_named(llama_checkpoint) -> None:
    config = ModelConfig.from_hf(llama_checkpoint)
    tensors = dict(load_hf_tensors(llama_checkpoint))
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(
        ValueError, match=r"missing .*'model\.layers\.1\.self_attn\.k_proj\.weight'"
    ):
        model_from_tensors(config, tensors)
    tensors = dict(load_hf_tensors(llama_checkpoint))
    del tensors["lm_head.weight"]
    with pytest.raises(ValueError, match=r"'lm_head\.weight'"):
        model_from_tensors(config, tensors)


def test_wrong_shape_is_named(llama_checkpoint) -> None:
    config = ModelConfig.from_hf(llama_checkpoint)
    tensors = dict(load_hf_tensors(llama_checkpoint))
    tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((128, 32), np.float32)
    with pytest.raises(
        ValueError,
        match=r"'model\.layers\.0\.mlp\.up_proj\.weight' has shape \(128, 32\), expected \(128, 64\)",
    ):
        model_from_tensors(config, tensors)


def test_unexpected_key_is_named(llama_checkpoint) -> None:
    config = ModelConfig.from_hf(llama_checkpoint)
    tensors = dict(load_hf_tensors(llama_checkpoint))
    tensors["model.layers.2.self_attn.q_proj.weight"] = np.zeros((64, 64), np.float32)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros((64,), np.float32)
    with pytest.raises(
        ValueError, match=r"unexpected .*'model\.layers\.0\.self_attn\.q_proj\.bias'"
    ):
        model_from_tensors(config, tensors)
    # rotary buffers of old checkpoints are ignored, not errors
    tensors = dict(load_hf_tensors(llama_checkpoint))
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros((8,), np.float32)
    model_from_tensors(config, tensors)


def test_corrupt_safetensors_names_the_file(llama_checkpoint, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(llama_checkpoint, bad)
    file = bad / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(
        ValueError, match=r"corrupt safetensors file .*model\.safetensors.*truncated"
    ):
        from_pretrained(bad)
    file.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match=r"corrupt safetensors file .*model\.safetensors"):
        from_pretrained(bad)
    file.write_bytes(b"abc")
    with pytest.raises(ValueError, match="corrupt safetensors file"):
        read_safetensors(file)


def test_missing_files_and_offline_hub(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            ModelConfig(
                model_type="llama",
                vocab_size=8,
                hidden_size=8,
                intermediate_size=8,
                num_layers=1,
                num_heads=1,
            ).to_hf()
        )
    )
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickle checkpoints are not supported"):
        from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="checkpoint directory not found"):
        from_pretrained(tmp_path / "does" / "not" / "exist")
    # HF_HUB_OFFLINE=1 (tests/conftest.py): an uncached repo id fails without network access
    with pytest.raises(ValueError, match="could not be fetched from the Hugging Face Hub"):
        from_pretrained("raco-jax-tests/definitely-not-a-repo")


def test_safetensors_reader_matches_library(tmp_path) -> None:
    import ml_dtypes

    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.arange(5, dtype=np.int64),
        "c": np.linspace(-1, 1, 6).astype(ml_dtypes.bfloat16).reshape(2, 3),
        "empty": np.zeros((0, 3), np.float16),
    }
    path = tmp_path / "x.safetensors"
    safetensors.numpy.save_file(arrays, str(path))
    read = read_safetensors(path)
    assert set(read) == set(arrays)
    for key, value in arrays.items():
        assert read[key].dtype == value.dtype
        np.testing.assert_array_equal(read[key], value)
