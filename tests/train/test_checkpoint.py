"""Checkpoints: exact round trips, async saves, max_to_keep, sharded restore, SIGKILL safety."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import raco_jax
from raco_jax.train.checkpoint import Checkpoint, CheckpointManager, abstract_target
from raco_jax.train.config import AlignConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _params() -> dict[str, jax.Array]:
    return {
        "embed": jnp.arange(32, dtype=jnp.float32).reshape(4, 8) / 7.0,
        "layer": {"kernel": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "bias": jnp.ones((8,))},
    }


def _optimizer() -> optax.GradientTransformation:
    return optax.chain(
        raco_jax.pcgrad(seed=3, num_objectives=2), optax.clip_by_global_norm(1.0), optax.adamw(1e-2)
    )


def _run_state(params: dict[str, jax.Array]) -> dict[str, object]:
    """params + optax state after two real updates (non-trivial moments, count, pcgrad key)."""
    tx = _optimizer()

    @jax.jit
    def two_steps(params):
        opt_state = tx.init(params)
        for i in range(2):
            stacked = jax.tree.map(lambda p, i=i: jnp.stack([p * (i + 1), -p + 0.5]), params)
            updates, opt_state = tx.update(stacked, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state

    params, opt_state = two_steps(params)
    return {"params": params, "opt_state": opt_state, "rng": jax.random.key(42)}


def _assert_trees_equal(actual: object, expected: object) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        if jax.dtypes.issubdtype(e.dtype, jax.dtypes.prng_key):
            assert a.dtype == e.dtype
            np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(e))
        else:
            assert a.dtype == e.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_round_trip_is_exact(tmp_path: pathlib.Path) -> None:
    state = _run_state(_params())
    config = AlignConfig(objectives=("helpful", "harmless"), weights=(0.7, 0.3)).to_dict()
    data_state = {"epoch": 1, "batch": 17, "seed": 0, "num_rows": 123}
    metrics = {"loss": 0.6931, "rewards/helpful/accuracies": 0.5, "aggregation/cos_01": -0.25}
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        assert ckpt.save(
            12,
            state,
            data_state=data_state,
            metrics=metrics,
            metadata={"config": config},
            force=True,
        )
        restored = ckpt.restore(target=state)
    assert isinstance(restored, Checkpoint)
    assert restored.step == 12 and restored.good
    assert restored.data_state == data_state
    assert restored.metrics == metrics
    assert restored.metadata == {"config": config}
    _assert_trees_equal(restored.state, state)
    # the optax NamedTuples come back as NamedTuples, with pcgrad's typed key
    pcgrad_state = restored.state["opt_state"][0]
    assert type(pcgrad_state) is raco_jax.PCGradState
    assert jax.dtypes.issubdtype(pcgrad_state.key.dtype, jax.dtypes.prng_key)
    # the key stream continues exactly where it was
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.split(pcgrad_state.key)),
        jax.random.key_data(jax.random.split(state["opt_state"][0].key)),
    )


def test_restore_without_target_rewraps_keys(tmp_path: pathlib.Path) -> None:
    state = _run_state(_params())
    state["keys"] = jax.random.split(jax.random.key(1, impl="rbg"), 3)
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, force=True)
        raw = ckpt.restore(1).state
    assert raw["rng"].dtype == state["rng"].dtype
    assert str(jax.random.key_impl(raw["keys"])) == "rbg"
    np.testing.assert_array_equal(
        jax.random.key_data(raw["keys"]), jax.random.key_data(state["keys"])
    )
    np.testing.assert_array_equal(
        jax.random.key_data(raw["opt_state"][0]["key"]),
        jax.random.key_data(state["opt_state"][0].key),
    )
    np.testing.assert_array_equal(raw["params"]["embed"], state["params"]["embed"])


def test_async_save_copies_before_returning(tmp_path: pathlib.Path) -> None:
    state = {"w": jnp.arange(1 << 18, dtype=jnp.float32), "rng": jax.random.key(7)}
    expected = jax.tree.map(lambda x: x.copy(), state)
    ckpt = CheckpointManager(tmp_path, save_every=1)
    assert ckpt.save(1, state, data_state={"batch": 1})
    # the caller may donate (delete) its buffers as soon as save returns
    for leaf in jax.tree.leaves(state):
        leaf.delete()
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 1
    restored = ckpt.restore(target=expected)
    _assert_trees_equal(restored.state, expected)
    assert restored.data_state == {"batch": 1}
    ckpt.close()


def test_max_to_keep_and_should_save(tmp_path: pathlib.Path) -> None:
    state = {"w": jnp.zeros((3,))}
    ckpt = CheckpointManager(tmp_path, save_every=2, max_to_keep=2)
    saved = [step for step in range(1, 11) if ckpt.save(step, state, metrics={"loss": 1.0})]
    assert saved == [2, 4, 6, 8, 10]
    assert not ckpt.save(10, state, force=True)  # the final save coinciding with a periodic one
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [8, 10]
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [8, 10]
    ckpt.close()


def test_last_good_checkpoint_survives_max_to_keep(tmp_path: pathlib.Path) -> None:
    state = {"w": jnp.zeros((3,))}
    ckpt = CheckpointManager(tmp_path, save_every=1, max_to_keep=2)
    ckpt.save(1, state, metrics={"loss": 0.5})
    ckpt.save(2, {"w": jnp.ones((3,))}, metrics={"loss": 0.4})
    for step in (3, 4, 5):
        ckpt.save(step, state, metrics={"loss": float("nan")})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2, 4, 5]
    assert ckpt.latest_step() == 5 and ckpt.last_good_step() == 2
    assert not ckpt.restore(5).good
    ckpt.close()
    # a new process sees the same, and keeps protecting step 2
    reopened = CheckpointManager(tmp_path, save_every=1, max_to_keep=2)
    assert reopened.last_good_step() == 2
    reopened.save(6, state, metrics={"loss": float("inf")})
    reopened.save(7, state, good=False)
    reopened.wait_until_finished()
    assert reopened.all_steps() == [2, 6, 7]
    restored = reopened.restore(reopened.last_good_step(), target=state)
    np.testing.assert_array_equal(restored.state["w"], np.ones(3))
    reopened.close()


def test_restore_errors_name_the_step(tmp_path: pathlib.Path) -> None:
    ckpt = CheckpointManager(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        ckpt.restore()
    ckpt.save(3, {"w": jnp.zeros(2)}, force=True)
    with pytest.raises(FileNotFoundError, match=r"step 4 .*available steps: \[3\]"):
        ckpt.restore(4)
    with pytest.raises(TypeError, match=r"metrics\['bad'\]"):
        ckpt.save(5, {"w": jnp.zeros(2)}, metrics={"bad": object()}, force=True)
    with pytest.raises(ValueError, match="save_every"):
        CheckpointManager(tmp_path, save_every=-1)
    ckpt.close()


def test_restore_onto_sharded_target(tmp_path: pathlib.Path) -> None:
    if jax.device_count() < 8:
        pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets XLA_FLAGS")
    mesh = jax.make_mesh(
        (2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3
    )
    specs = {"embed": P("fsdp", "tensor"), "layer": {"kernel": P(None, "fsdp"), "bias": P()}}
    state = _run_state(_params())
    state["keys"] = jax.random.split(jax.random.key(5), 4)
    # saved from one device, restored onto the mesh ...
    with CheckpointManager(tmp_path / "single", async_save=False) as ckpt:
        ckpt.save(1, state, data_state={"batch": 1}, force=True)
        param_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
        sharded_params = jax.device_put(state["params"], param_shardings)
        target = {
            "params": sharded_params,
            "opt_state": _optimizer().init(sharded_params),
            "rng": jax.device_put(jax.random.key(0), NamedSharding(mesh, P())),
            "keys": jax.device_put(
                jax.random.split(jax.random.key(0), 4), NamedSharding(mesh, P("data"))
            ),
        }
        abstract = abstract_target(target)
        restored = ckpt.restore(target=abstract).state
    _assert_trees_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract), strict=True):
        assert got.sharding == want.sharding, (got.sharding, want.sharding)
    assert restored["params"]["embed"].sharding.spec == P("fsdp", "tensor")
    assert restored["opt_state"][2][0].mu["embed"].sharding.spec == P("fsdp", "tensor")
    assert restored["keys"].sharding.spec == P("data")
    # ... and saved sharded, restored onto other shardings of the same mesh.
    with CheckpointManager(tmp_path / "sharded") as ckpt:
        ckpt.save(2, restored, force=True)
        other = jax.tree.map(
            lambda x: (
                jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P("data")))
                if x.ndim >= 1 and x.shape[0] % 2 == 0
                else x
            ),
            abstract,
        )
        again = ckpt.restore(target=other).state
    _assert_trees_equal(again, state)
    assert again["params"]["embed"].sharding.spec == P("data")


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import jax, jax.numpy as jnp
    from raco_jax.train.checkpoint import CheckpointManager

    directory, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ckpt = CheckpointManager(directory, save_every=1, max_to_keep=5)

    def state(step):
        return {"w": jnp.full((size,), float(step), jnp.float32), "rng": jax.random.key(step)}

    for step in (1, 2):
        ckpt.save(step, state(step), data_state={"batch": step}, metrics={"loss": 1.0 / step})
        ckpt.wait_until_finished()
    if mode == "during":
        ckpt.save(3, state(3), data_state={"batch": 3})  # async: returns while writing
    print("killing with", sorted(os.listdir(directory)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("mode", ["during", "between"])
def test_sigkill_leaves_only_finished_checkpoints(tmp_path: pathlib.Path, mode: str) -> None:
    size = 1 << 24  # 64 MiB: still being written when the process dies
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), mode, str(size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "killing with" in proc.stdout, proc.stderr[-3000:]
    ckpt = CheckpointManager(tmp_path, save_every=1, max_to_keep=5)
    latest = ckpt.latest_step()
    assert latest in (2, 3)
    if mode == "between" or "'3'" not in proc.stdout:
        # step 3 had not been committed when the process died: it must not be listed
        assert latest == 2
    target = {"w": jax.ShapeDtypeStruct((size,), jnp.float32), "rng": jax.random.key(0)}
    restored = ckpt.restore(target=target)
    assert restored.step == latest and restored.data_state == {"batch": latest}
    assert float(restored.state["w"][0]) == latest == float(restored.state["w"][-1])
    # the run resumes and saves its next checkpoint where the dead one was being written
    assert ckpt.save(3, {"w": jnp.zeros((4,)), "rng": jax.random.key(3)}, force=True) == (
        latest == 2
    )
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 3
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    ckpt.close()


def test_flax_nnx_state_round_trip(tmp_path: pathlib.Path) -> None:
    nnx = pytest.importorskip("flax.nnx")
    params = nnx.state(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Param)
    state = {
        "params": params,
        "opt_state": optax.adamw(1e-3).init(params),
        "rng": jax.random.key(1),
    }
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, force=True)
        restored = ckpt.restore(target=jax.eval_shape(lambda: state)).state
    assert isinstance(restored["params"], nnx.State)
    _assert_trees_equal(restored, state)


class _FlatPCGradState(NamedTuple):
    """PCGradState as checkpoints before December 2026 hold it: the diagnostics on the state."""

    key: jax.Array
    coefficients: jax.Array
    dual: jax.Array
    clipped_dual: jax.Array
    gram: jax.Array
    duality_gap: jax.Array
    num_conflicts: jax.Array
    cos_update_anchor: jax.Array


def test_checkpoints_of_the_flat_diagnostics_layout_still_restore(tmp_path) -> None:
    params = _params()
    tx = _optimizer()
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.stack([p, -0.5 * p]), params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial diagnostics and key
    head = opt_state[0]
    flat = _FlatPCGradState(head.key, *head.diagnostics[:7])
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, {"params": params, "opt_state": (flat, *opt_state[1:])}, force=True)
        fresh = tx.init(params)
        restored = ckpt.restore(1, target={"params": params, "opt_state": fresh}).state
    new_head = restored["opt_state"][0]
    assert type(new_head) is raco_jax.PCGradState
    for name in head.diagnostics._fields[:7]:
        np.testing.assert_array_equal(
            getattr(new_head.diagnostics, name), getattr(head.diagnostics, name)
        )
    assert bool(new_head.diagnostics.finite)  # a field the old layout lacked: the target's
    np.testing.assert_array_equal(jax.random.key_data(new_head.key), jax.random.key_data(head.key))
    jax.tree.map(np.testing.assert_array_equal, restored["opt_state"][1:], opt_state[1:])
    # a tree that is no older layout of the target still fails loudly
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        with pytest.raises(ValueError, match="tree structures do not match"):
            ckpt.restore(1, target={"params": params, "opt_state": optax.adam(1.0).init(params)})
