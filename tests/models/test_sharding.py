"""Sharding: the rules table, non-divisible dims, and a model loaded onto a (2, 2, 2) CPU mesh.

tests/conftest.py gives 8 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from raco_jax.models import (
    DEFAULT_RULES,
    Decoder,
    ModelConfig,
    cache_shardings,
    from_pretrained,
    logical_axes,
    make_mesh,
    model_shardings,
    partition_spec,
    shard_model,
)

needs_8_devices = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 (simulated) devices; see tests/conftest.py"
)

EXPECTED_SPECS = {
    ("embed_tokens", "embedding"): PartitionSpec("tensor", "fsdp"),
    ("lm_head", "kernel"): PartitionSpec("fsdp", "tensor"),
    ("norm", "weight"): PartitionSpec(None),
    ("layers", 0, "self_attn", "q_proj", "kernel"): PartitionSpec("fsdp", "tensor", None),
    ("layers", 0, "self_attn", "k_proj", "kernel"): PartitionSpec("fsdp", "tensor", None),
    ("layers", 0, "self_attn", "o_proj", "kernel"): PartitionSpec("tensor", None, "fsdp"),
    ("layers", 1, "mlp", "gate_proj", "kernel"): PartitionSpec("fsdp", "tensor"),
    ("layers", 1, "mlp", "down_proj", "kernel"): PartitionSpec("tensor", "fsdp"),
    ("layers", 1, "input_layernorm", "weight"): PartitionSpec(None),
}


@needs_8_devices
def test_partition_spec_replicates_non_divisible_dims() -> None:
    mesh = make_mesh((2, 2, 2))
    # 3 KV heads cannot be split 2 ways: replicated; head_dim is never split
    assert partition_spec(("embed", "kv_heads", "head_dim"), (64, 3, 16), mesh) == PartitionSpec(
        "fsdp", None, None
    )
    # an odd vocabulary stays whole, the embed axis is still split
    assert partition_spec(("vocab", "embed"), (257, 64), mesh) == PartitionSpec(None, "fsdp")
    # batch over (data, fsdp) keeps the axes that divide
    assert partition_spec(("batch", None), (8, 5), mesh) == PartitionSpec(("data", "fsdp"), None)
    assert partition_spec(("batch", None), (2, 5), mesh) == PartitionSpec("data", None)
    # a mesh axis is used once per array; unknown mesh axes are ignored
    rules = {"embed": "tensor", "mlp": ("tensor", "pipeline")}
    assert partition_spec(("embed", "mlp"), (64, 128), mesh, rules) == PartitionSpec("tensor", None)
    with pytest.raises(ValueError, match="do not match the array rank"):
        partition_spec(("embed",), (4, 4), mesh)


def test_every_parameter_has_logical_axes_from_the_vocabulary() -> None:
    config = ModelConfig(
        model_type="gemma3_text",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        head_dim=16,
    )
    model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
    vocabulary = {name for name, _ in DEFAULT_RULES}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = logical_axes(variable)
        assert names is not None and len(names) == len(variable.get_value().shape), path
        assert set(names) <= vocabulary, (path, names)


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from models import tiny_checkpoints as tiny

    # std 0.1 keeps logits O(1), so 1e-5 is about float32 resolution for reordered sums
    directory, _ = tiny.llama(tmp_path_factory.mktemp("llama_sharded"), tie=False, std=0.1)
    return directory


@needs_8_devices
def test_sharded_load_matches_single_device(llama_checkpoint) -> None:
    from models import tiny_checkpoints as tiny

    mesh = make_mesh((2, 2, 2))
    sharded, config = from_pretrained(llama_checkpoint, mesh=mesh)
    single, _ = from_pretrained(llama_checkpoint)

    params = dict(nnx.to_flat_state(nnx.state(sharded, nnx.Param)))
    for path, spec in EXPECTED_SPECS.items():
        value = params[path].get_value()
        assert value.sharding == NamedSharding(mesh, spec), path
        assert len(value.addressable_shards) == 8
    embedding = params[("embed_tokens", "embedding")].get_value()
    assert embedding.addressable_shards[0].data.shape == (config.vocab_size // 2, 32)
    # model_shardings agrees with what was placed
    shardings = dict(nnx.to_flat_state(model_shardings(sharded, mesh)))
    for path, variable in params.items():
        assert variable.get_value().sharding == shardings[path], path

    ids, mask = tiny.padded_batches()["left"]
    forward = nnx.jit(lambda m, i, k: m(i, attention_mask=k))
    expected = np.asarray(forward(single, jnp.asarray(ids), jnp.asarray(mask)))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data", None))
    with jax.set_mesh(mesh):
        got = forward(
            sharded,
            jax.device_put(jnp.asarray(ids), batch_sharding),
            jax.device_put(jnp.asarray(mask), batch_sharding),
        )
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(got)[real], expected[real], atol=1e-5, rtol=0)


@needs_8_devices
def test_shard_model_moves_parameters_in_place() -> None:
    config = ModelConfig(
        model_type="qwen3",
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=1,
    )
    mesh = make_mesh((1, 2, 4))
    model = shard_model(Decoder(config, rngs=nnx.Rngs(0)), mesh)
    q = model.layers[0].self_attn.q_proj.kernel[...]
    k = model.layers[0].self_attn.k_proj.kernel[...]
    assert q.sharding.spec == PartitionSpec("fsdp", "tensor", None)
    assert k.sharding.spec == PartitionSpec("fsdp", None, None)  # 1 KV head: replicated
    cache = model.init_cache(batch_size=4, max_len=8)
    cache = jax.device_put(cache, cache_shardings(cache, mesh))
    batch = ("data", "fsdp")  # data has size 1 here, so only fsdp actually splits rows
    assert cache.keys[0].sharding.spec == PartitionSpec(batch, None, None, None)
    assert cache.key_valid.sharding.spec == PartitionSpec(batch, None)
    assert cache.keys[0].addressable_shards[0].data.shape == (2, 8, 1, 8)
