"""gram_matrix on big leaves: the chunked CPU reduction against a float64 reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import raco_jax


def _relative_error(gram: jax.Array, x: np.ndarray) -> float:
    """max |G - G_exact| / sqrt(G_ii G_jj): the error relative to the norms it is built from."""
    exact = x @ x.T
    norms = np.sqrt(np.diag(exact))
    return float(np.max(np.abs(np.asarray(gram, np.float64) - exact) / np.outer(norms, norms)))


def _uses_dot(tree: dict) -> bool:
    return "dot_general" in jax.jit(raco_jax.gram_matrix).lower(tree).as_text()


@pytest.mark.parametrize(
    ("k", "size"),
    [
        (2, 1 << 17),  # the smallest leaf reduced in chunks for up to 4 objectives
        (3, 240_240),  # its closest chunk is 260, not a power of two
        (4, 1 << 20),
        (8, 1 << 19),  # 36 products in two passes (26 + 10)
    ],
)
def test_big_leaf_is_reduced_in_chunks_to_float32_accuracy(k: int, size: int) -> None:
    rng = np.random.default_rng(k)
    # a shared component makes the off-diagonal products large, as for correlated gradients
    x = rng.standard_normal((k, size)) + 0.5 * rng.standard_normal(size)
    tree = {"leaf": jnp.asarray(x, jnp.float32)}
    assert jax.default_backend() != "cpu" or not _uses_dot(tree)
    # float32 inputs rounded once (6e-8); a sequential float32 sum over 1e6 entries loses 1e-5
    assert (
        _relative_error(raco_jax.gram_matrix(tree), x.astype(np.float32).astype(np.float64)) < 1e-6
    )


def test_bf16_big_leaf_accumulates_in_float32() -> None:
    x = jax.random.normal(jax.random.key(3), (3, 1 << 17)).astype(jnp.bfloat16)
    tree = {"leaf": x}
    assert jax.default_backend() != "cpu" or not _uses_dot(tree)
    assert _relative_error(raco_jax.gram_matrix(tree), np.asarray(x, np.float64)) < 1e-6


@pytest.mark.parametrize(
    ("k", "size"),
    [
        (2, 4096),  # small: XLA's dot is as fast
        (2, (1 << 17) - 256),  # just below the chunked reduction's threshold
        (8, 1 << 18),  # below it for more than 10 products
        (2, 1_000_003),  # prime: no chunk divides it
        (9, 1 << 17),  # 45 products: too many for one pass
    ],
)
def test_other_leaves_use_the_dot_and_agree(k: int, size: int) -> None:
    x = np.random.default_rng(size).standard_normal((k, size))
    tree = {"leaf": jnp.asarray(x, jnp.float32)}
    assert _uses_dot(tree)
    assert (
        _relative_error(raco_jax.gram_matrix(tree), x.astype(np.float32).astype(np.float64)) < 1e-6
    )


def test_mixed_tree_sums_leaves_of_both_paths() -> None:
    rng = np.random.default_rng(7)
    leaves = {"big": rng.standard_normal((4, 1 << 18)), "small": rng.standard_normal((4, 33, 17))}
    tree = {name: jnp.asarray(v, jnp.float32) for name, v in leaves.items()}
    flat = np.concatenate([v.reshape(4, -1) for v in leaves.values()], axis=1)
    gram = jax.jit(raco_jax.gram_matrix)(tree)
    assert _relative_error(gram, flat.astype(np.float32).astype(np.float64)) < 1e-6
    np.testing.assert_array_equal(np.asarray(gram), np.asarray(gram).T)


def test_anchor_products_of_a_big_leaf_match_float64() -> None:
    from raco_jax.aggregation.gram import anchor_products, weighted_anchor

    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 1 << 18)) + 0.3 * rng.standard_normal(1 << 18)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    tree = {"leaf": jnp.asarray(x, jnp.float32)}
    assert jax.default_backend() != "cpu" or "dot_general" not in (
        jax.jit(anchor_products).lower(tree, {"leaf": tree["leaf"][0]}).as_text()
    )
    g0 = weighted_anchor(tree, jnp.asarray(w, jnp.float32))
    got = jax.jit(anchor_products)(tree, g0)
    xs, g0s = x.astype(np.float32).astype(np.float64), np.asarray(g0["leaf"], np.float64)
    norms = np.linalg.norm(xs, axis=1) * np.linalg.norm(g0s)
    assert np.max(np.abs(np.asarray(got.inner, np.float64) - xs @ g0s) / norms) < 1e-6
    assert abs(float(got.norm2) - g0s @ g0s) / (g0s @ g0s) < 1e-6
