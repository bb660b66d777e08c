r"""The jitted RACO train step: one policy forward, K backward passes, one aggregated update.

One step on a :class:`~raco_jax.preference.PreferenceBatch` of B pairs (2B token rows):

1. the policy runs ONCE on the 2B sequences; summed completion log-probs (float32, chunked
   over the vocabulary) give the per-response log-ratios against the reference log-probs
   (precomputed in the batch, or computed online from a frozen reference state);
2. K losses, one per objective, from the same margins (``jax.vmap`` over the K sign rows);
3. stacked methods (``raco``, ``cagrad``, ``dpo-lw``, ``mgda``, ``pcgrad``): per-objective
   gradients with :func:`raco_jax.value_and_objective_grads` (one ``jax.vjp``, the pullback
   vmapped over K one-hot cotangents), handed to the user's optax chain, which must be headed by
   a raco_jax aggregator (:func:`raco_jax.clipped_cagrad`, ...). Scalar methods (``dpo``: the
   weighted loss with one backward, ``amopo``, ``modpo``): plain gradients of one scalar loss;
4. ``optax.apply_updates``; the metrics (losses, TRL's ``rewards/*``, gradient norms and the
   aggregation diagnostics) are returned as float32 scalars.

Gradient accumulation: ``micro_batches=M`` splits the batch into M micro-batches inside the
step and sums their stacked gradients in a ``jax.lax.scan`` before aggregating once (each
micro-batch loss is normalised by the WHOLE batch's counts, so the result equals the one-batch
gradient). Alternatively wrap the chain in :func:`raco_jax.accumulate_objectives` and call the step
once per micro-batch.

The model is handled the NNX way: ``nnx.split(model, wrt, ...)`` gives
``(graphdef, trainable, rest)``; the step is a pure function of these states and calls
``nnx.merge`` inside the loss. Only the ``wrt`` subset (default ``nnx.Param``; a LoRA filter for
adapters) is differentiated and updated.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from raco_jax.aggregation import gram_matrix
from raco_jax.aggregation.weightings import validate_weights
from raco_jax.objectives import value_and_objective_grads
from raco_jax.preference import (
    LENGTH_NORMALISED_LOSS_TYPES,
    LOSS_TYPES,
    PreferenceBatch,
    amopo_losses,
    dpo_losses,
    modpo_loss,
    objective_counts,
    pair_margins,
    preference_metrics,
    sequence_logps,
    sequence_logps_from_hidden,
    split_pairs,
)
from raco_jax.preference.logps import DEFAULT_VOCAB_CHUNK
from raco_jax.train.methods import (
    STACKED_METHODS,
    Reference,
    check_method,
    resolve_reference,
)

__all__ = [
    "TrainState",
    "TrainStep",
    "check_completion_lengths",
    "completion_window",
    "compute_reference_logps",
    "make_train_step",
    "policy_logps",
    "with_reference_logps",
]


class TrainState(NamedTuple):
    """Everything a train step updates, as a pytree.

    Attributes:
      step: int32 optimizer-step counter.
      params: the trainable ``nnx.State`` (the ``wrt`` filter of the model).
      rest: the rest of the model's state (frozen variables), passed through unchanged.
      opt_state: the optax state of the chain.
      ref_state: online reference only: a frozen copy of the initial trainable state (the
        reference is then ``merge(graphdef, ref_state, rest)``, so with LoRA only the adapters
        are copied), or the full ``nnx.State`` of an explicit reference model; else None.
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    ref_state: Any = None


def completion_window(
    loss_mask: jax.Array, max_completion_length: int
) -> tuple[jax.Array, jax.Array]:
    """The positions that score each row's completion: from the last prompt position (whose
    logits predict the first completion token) on, ``max_completion_length + 1`` of them.

    Returns:
      ``(positions, inside)``: int32 ``[R, W]`` indices into the time axis (clamped to it) and
      whether each lies inside it, ``W = min(max_completion_length + 1, T)``. A row whose
      completion is at most ``max_completion_length`` tokens long has all its scored positions
      in the window, so log-probs summed over it are the full ones.

    Example:
      >>> import jax.numpy as jnp
      >>> from raco_jax.train.step import completion_window
      >>> mask = jnp.array([[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
      >>> positions, inside = completion_window(mask, 2)
      >>> positions.tolist(), inside.tolist()
      ([[1, 2, 3], [3, 4, 4]], [[True, True, True], [True, True, False]])
    """
    length = loss_mask.shape[1]
    width = min(int(max_completion_length) + 1, length)
    start = jnp.maximum(jnp.argmax(loss_mask > 0, axis=1) - 1, 0)
    positions = start[:, None] + jnp.arange(width, dtype=start.dtype)[None, :]
    inside = positions < length
    return jnp.minimum(positions, length - 1).astype(jnp.int32), inside


def policy_logps(
    model: nnx.Module,
    batch: PreferenceBatch,
    vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK,
    time_chunk_size: int | None = None,
    first_layer: int = 0,
    max_completion_length: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Summed completion log-probs ``[2B]`` and token counts ``[2B]`` of a decoder on a batch.

    One forward over the 2B rows. With ``time_chunk_size`` the hidden states are projected
    ``time_chunk_size`` positions at a time (:func:`~raco_jax.preference.sequence_logps_from_hidden`
    with the model's ``logits_from_hidden``), so ``[2B, T, V]`` logits are never built; otherwise
    the model's float32 logits go through the vocabulary-chunked log-softmax. With
    ``first_layer > 0`` the forward starts from ``batch.layer_inputs``, the stream entering that
    layer (``Decoder.layer_inputs``, computed once where the layers below are frozen). With
    ``max_completion_length`` (completions hold at most that many tokens, as
    :func:`~raco_jax.data.tokenize_pairs` truncates them) only the positions of
    :func:`completion_window` are projected onto the vocabulary: the same log-probs, without the
    output projection of the prompt and padding positions (most of the cost of a small model
    with a large vocabulary).

    Args:
      model: a :class:`raco_jax.models.Decoder` (anything with ``__call__(ids, mask)`` logits,
        and ``hidden_states``/``logits_from_hidden`` for the time-chunked and layer-input paths).
      batch: the batch.
      vocab_chunk_size: vocabulary chunk of the log-sum-exp.
      time_chunk_size: positions per chunk for the hidden-state path (None: full logits).
      first_layer: the layer ``batch.layer_inputs`` enters (0: the batch has none).
      max_completion_length: the longest completion in tokens (None: project every position).

    Returns:
      ``(logps, counts)``, float32 ``[2B]`` each.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from raco_jax.models import Decoder, ModelConfig
      >>> from raco_jax.preference import make_batch
      >>> from raco_jax.train import policy_logps
      >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
      ...                      intermediate_size=32, num_layers=1, num_heads=2)
      >>> model = Decoder(config, rngs=nnx.Rngs(0))
      >>> batch = make_batch([[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2, [[1]])
      >>> logps, counts = policy_logps(model, batch)
      >>> logps.shape, counts.tolist()
      ((2,), [2.0, 2.0])
    """
    input_ids = jnp.asarray(batch.input_ids)
    attention_mask = jnp.asarray(batch.attention_mask)
    loss_mask = jnp.asarray(batch.loss_mask)
    if (batch.layer_inputs is None) != (first_layer == 0):
        raise ValueError(
            f"batch.layer_inputs and first_layer go together; got first_layer={first_layer} "
            f"and layer_inputs {'None' if batch.layer_inputs is None else 'given'}."
        )
    if time_chunk_size is None and first_layer == 0 and max_completion_length is None:
        logits = model(input_ids, attention_mask)
        return sequence_logps(logits, input_ids, loss_mask, chunk_size=vocab_chunk_size)
    start = {} if first_layer == 0 else {"layer_inputs": batch.layer_inputs}
    hidden, _ = model.hidden_states(input_ids, attention_mask, first_layer=first_layer, **start)
    if max_completion_length is not None:
        positions, inside = completion_window(loss_mask, max_completion_length)
        hidden = jnp.take_along_axis(hidden, positions[..., None], axis=1)
        input_ids = jnp.take_along_axis(input_ids, positions, axis=1)
        loss_mask = jnp.take_along_axis(loss_mask, positions, axis=1) * inside
    if time_chunk_size is not None:
        return sequence_logps_from_hidden(
            hidden, model.logits_from_hidden, input_ids, loss_mask, chunk_size=time_chunk_size
        )
    logits = model.logits_from_hidden(hidden)
    return sequence_logps(logits, input_ids, loss_mask, chunk_size=vocab_chunk_size)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "vocab_chunk_size",
        "time_chunk_size",
        "first_layer",
        "max_completion_length",
    ),
)
def _reference_logps_jit(
    state: Any,
    batch: PreferenceBatch,
    *,
    graphdef: Any,
    vocab_chunk_size: int | None,
    time_chunk_size: int | None,
    first_layer: int = 0,
    max_completion_length: int | None = None,
) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return policy_logps(
        model, batch, vocab_chunk_size, time_chunk_size, first_layer, max_completion_length
    )[0]


def _token_fields(batch: PreferenceBatch) -> PreferenceBatch:
    """Only the fields a forward pass needs (so cached log-probs do not change the jit key)."""
    return PreferenceBatch(
        batch.input_ids,
        batch.attention_mask,
        batch.loss_mask,
        batch.signs,
        batch.labeled,
        layer_inputs=batch.layer_inputs,
    )


def compute_reference_logps(
    model: nnx.Module,
    batches: PreferenceBatch | Iterable[PreferenceBatch],
    vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK,
    time_chunk_size: int | None = None,
    first_layer: int = 0,
    max_completion_length: int | None = None,
) -> jax.Array | list[jax.Array]:
    """Precomputes reference summed log-probs with a jitted forward (compiled once per shape).

    Args:
      model: the reference model (usually the initial policy).
      batches: one :class:`~raco_jax.preference.PreferenceBatch` or an iterable of them.
      vocab_chunk_size: vocabulary chunk of the log-sum-exp.
      time_chunk_size: positions per chunk for the hidden-state path (None: full logits).
      first_layer: the layer the batches' ``layer_inputs`` enter (0: none).
      max_completion_length: the longest completion (see :func:`policy_logps`).

    Returns:
      ``[2B]`` float32 log-probs for one batch, or a list of them.

    Example:
      >>> from flax import nnx
      >>> from raco_jax.models import Decoder, ModelConfig
      >>> from raco_jax.preference import make_batch
      >>> from raco_jax.train import compute_reference_logps
      >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
      ...                      intermediate_size=32, num_layers=1, num_heads=2)
      >>> batch = make_batch([[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2, [[1]])
      >>> ref = compute_reference_logps(Decoder(config, rngs=nnx.Rngs(0)), batch)
      >>> batch = batch._replace(ref_logps=ref)
      >>> batch.ref_logps.shape
      (2,)
    """
    graphdef, state = nnx.split(model)

    def one(batch: PreferenceBatch) -> jax.Array:
        if not isinstance(batch, PreferenceBatch):
            raise TypeError(f"batches must hold PreferenceBatch items, got {type(batch).__name__}.")
        return _reference_logps_jit(
            state,
            _token_fields(batch),
            graphdef=graphdef,
            vocab_chunk_size=vocab_chunk_size,
            time_chunk_size=time_chunk_size,
            first_layer=first_layer,
            max_completion_length=max_completion_length,
        )

    if isinstance(batches, PreferenceBatch):
        return one(batches)
    return [one(batch) for batch in batches]


def with_reference_logps(
    model: nnx.Module,
    batches: Iterable[PreferenceBatch],
    vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK,
    time_chunk_size: int | None = None,
) -> list[PreferenceBatch]:
    """The batches with ``ref_logps`` filled in by :func:`compute_reference_logps`.

    Example:
      >>> from flax import nnx
      >>> from raco_jax.models import Decoder, ModelConfig
      >>> from raco_jax.preference import make_batch
      >>> from raco_jax.train import with_reference_logps
      >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
      ...                      intermediate_size=32, num_layers=1, num_heads=2)
      >>> batch = make_batch([[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2, [[1]])
      >>> [b.ref_logps.shape for b in with_reference_logps(Decoder(config, rngs=nnx.Rngs(0)),
      ...                                                    [batch, batch])]
      [(2,), (2,)]
    """
    batches = list(batches)
    logps = compute_reference_logps(model, batches, vocab_chunk_size, time_chunk_size)
    return [batch._replace(ref_logps=lp) for batch, lp in zip(batches, logps, strict=True)]


def check_completion_lengths(batch: PreferenceBatch, max_completion_length: int | None) -> None:
    """Raises ValueError when a (concrete) batch holds a completion longer than
    ``max_completion_length`` tokens, which :func:`completion_window` would cut.

    Example:
      >>> from raco_jax.preference import make_batch
      >>> from raco_jax.train.step import check_completion_lengths
      >>> batch = make_batch([[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2, [[1]])
      >>> check_completion_lengths(batch, 1)
      Traceback (most recent call last):
      ...
      ValueError: a completion has 2 tokens, more than max_completion_length=1: tokenize with max_completion_length=1.
    """
    if max_completion_length is None:
        return
    try:
        longest = int(np.max(np.sum(np.asarray(batch.loss_mask) > 0, axis=1)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if longest > max_completion_length:
        raise ValueError(
            f"a completion has {longest} tokens, more than max_completion_length="
            f"{max_completion_length}: tokenize with max_completion_length={max_completion_length}."
        )


def _first(tree: Any, key: str) -> Any:
    found = optax.tree.get_all_with_path(tree, key)
    return found[0][1] if found else None


def _safe_sqrt(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(x, 0.0))


class TrainStep:
    """A jitted RACO / baseline train step over :class:`~raco_jax.preference.PreferenceBatch`.

    ``step = TrainStep(model, tx, method=..., objectives=..., weights=...)``;
    ``state = step.init(model)``; ``state, metrics = step(state, batch)``;
    ``model = step.merge(state)``.

    Losses: stacked methods and ``dpo`` use :func:`~raco_jax.preference.dpo_losses` with
    ``loss_type`` (``ipo`` and ``sigmoid_norm`` on log-ratios averaged over each response's
    tokens, as TRL does); ``amopo`` uses :func:`~raco_jax.preference.amopo_losses` (reference-free)
    and ``modpo`` :func:`~raco_jax.preference.modpo_loss` for objective ``modpo_target``, with the
    batch's ``reward_margins``. The optimised scalar of the scalar methods is
    :math:`\\sum_k w_k L_k` (``dpo``, ``amopo``) or the MODPO loss.

    Metrics (float32 scalars): ``loss`` (the weighted loss, or MODPO's), ``loss/<objective>``,
    TRL's ``rewards/<objective>/{chosen,rejected,margins,accuracies}``,
    ``logps/<objective>/{chosen,rejected}`` and their pooled forms (see
    :func:`~raco_jax.preference.preference_metrics`), ``grad_norm`` (norm of the aggregated
    direction before clipping; for scalar methods the gradient norm), ``update_norm``,
    ``learning_rate`` (when the chain holds one, or from ``schedule``), and for stacked methods
    ``grad_norm/<objective>`` (:math:`\\sqrt{H_{kk}}`), ``grad_norm/anchor``
    (:math:`\\|\\sum_k w_k g_k\\|`), ``aggregation/cos/<i>/<j>``
    (:math:`H_{ij}/\\sqrt{H_{ii}H_{jj}}`), ``aggregation/coefficients/<objective>``,
    ``aggregation/dual/<objective>``, ``aggregation/num_clipped`` (``raco``, ``cagrad``: the
    number of k with :math:`p^*_k > w_k`), ``aggregation/duality_gap``, ``aggregation/num_conflicts`` and
    ``aggregation/cos_update_anchor``, read from the aggregator's state.

    Donation: the step donates its input state (``donate=True``), including the arrays
    ``init`` took from the model; use ``merge(state)`` for the trained model rather than the
    object passed to ``init``.

    Args:
      model: the policy (an NNX module such as :class:`raco_jax.models.Decoder`); only its
        structure is kept.
      tx: the optax chain: headed by a raco_jax aggregator for stacked methods, a plain
        optimizer for scalar methods (see :func:`make_optimizer`).
      method: one of :data:`METHODS`.
      objectives: K objective names (metric names).
      weights: ``[K]`` user weights on the simplex.
      beta: DPO temperature.
      loss_type: one of :data:`~raco_jax.preference.LOSS_TYPES` (not for ``amopo``/``modpo``).
      label_smoothing: for the sigmoid and robust losses.
      exclude_ties: drop ties from each objective's mean.
      wrt: the NNX filter of the trainable variables (default ``nnx.Param``).
      reference: one of :data:`~raco_jax.train.methods.REFERENCES`: ``"precomputed"``
        (``batch.ref_logps``), ``"online"`` (a frozen reference state in the train state),
        ``"lora_base"`` (online, where the trainable state is LoRA adapters: the reference is
        the base model) or ``"none"``; default (None): ``"none"`` for ``amopo``, else
        ``"precomputed"`` (:func:`~raco_jax.train.methods.resolve_reference`).
      micro_batches: M, micro-batches accumulated inside the step (B divisible by M).
      modpo_target: the target objective of ``modpo``.
      vocab_chunk_size: vocabulary chunk of the log-softmax.
      time_chunk_size: positions per chunk for projecting hidden states, so the ``[2B, T, V]``
        float32 logits are never built (each chunk is recomputed in the backward pass, about
        one extra output-projection matmul). Recommended for large vocabularies (e.g. 128 to
        512 for a 150k vocabulary); None (default) uses the model's full logits.
      schedule: optional learning-rate schedule for the ``learning_rate`` metric.
      donate: donate the input state to the step.
      first_layer: the decoder layer the batches' ``layer_inputs`` enter (0: batches hold
        token ids only). Only for a policy whose layers below ``first_layer`` are frozen (LoRA
        on the layers above, :class:`~raco_jax.models.LoRAConfig` ``layers``): their output is
        computed once per pair (:func:`raco_jax.train.pair_logps.pair_layer_inputs`), and the
        step runs the layers from ``first_layer`` on. The same computation: the losses and
        gradients equal those of the full forward up to float rounding.
      max_completion_length: completions hold at most this many tokens (checked on every
        batch): only :func:`completion_window`'s positions are projected onto the vocabulary.

    The pieces are public and pure, so other loops can reuse them: :meth:`loss` (the losses of
    one micro-batch), :meth:`step` (one optimizer step, un-jitted), :meth:`eval_step` (the
    loss-side metrics of a batch, no update); :meth:`compile` jits :meth:`step` and
    :meth:`eval_step` (with shardings, for a mesh: :func:`raco_jax.train.mesh.shard_train_step`
    calls it), ``step(state, batch)`` runs the compiled step and :meth:`evaluate` pools the
    compiled evaluation over held-out batches exactly.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> import raco_jax
      >>> from raco_jax.models import Decoder, ModelConfig
      >>> from raco_jax.preference import make_batch
      >>> from raco_jax.train import TrainStep
      >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
      ...                      intermediate_size=32, num_layers=1, num_heads=2)
      >>> model = Decoder(config, rngs=nnx.Rngs(0))
      >>> tx = optax.chain(raco_jax.clipped_cagrad((0.5, 0.5)), optax.adamw(1e-3))
      >>> step = TrainStep(model, tx, method="raco", objectives=("helpful", "harmless"),
      ...                  weights=(0.5, 0.5), reference="online")
      >>> state = step.init(model)
      >>> batch = make_batch([[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2,
      ...                    signs=[[1], [-1]])
      >>> state, metrics = step(state, batch)
      >>> round(float(metrics["loss/helpful"]), 4)  # policy == reference: log 2
      0.6931
    """

    def __init__(
        self,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        *,
        method: str = "raco",
        objectives: Sequence[str],
        weights: Sequence[float] | jax.Array,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        exclude_ties: bool = False,
        wrt: Any = nnx.Param,
        reference: Reference | None = None,
        micro_batches: int = 1,
        modpo_target: int = 0,
        vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK,
        time_chunk_size: int | None = None,
        schedule: optax.Schedule | None = None,
        donate: bool = True,
        first_layer: int = 0,
        max_completion_length: int | None = None,
    ) -> None:
        check_method(method)
        if isinstance(objectives, str):
            raise TypeError(
                f"objectives must be a sequence of names, got the string {objectives!r}."
            )
        self.objectives = tuple(str(name) for name in objectives)
        if len(set(self.objectives)) != len(self.objectives) or len(self.objectives) < 1:
            raise ValueError(f"objectives must be distinct names, got {self.objectives}.")
        self.num_objectives = len(self.objectives)
        self.weights = validate_weights(weights, num_objectives=self.num_objectives)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
        if method in ("amopo", "modpo") and loss_type != "sigmoid":
            raise ValueError(f"method={method!r} defines its own loss; leave loss_type='sigmoid'.")
        reference = resolve_reference(method, reference)
        if not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches must be a positive int, got {micro_batches!r}.")
        if method == "modpo" and not 0 <= modpo_target < self.num_objectives:
            raise ValueError(
                f"modpo_target must index one of the {self.num_objectives} objectives, got "
                f"{modpo_target}."
            )
        self.method = method
        self.stacked = method in STACKED_METHODS
        self.tx = tx
        self.beta = float(beta)
        self.loss_type = loss_type
        self.label_smoothing = float(label_smoothing)
        self.exclude_ties = bool(exclude_ties)
        self.wrt = wrt
        self.reference = reference
        self.online = reference in ("online", "lora_base")
        self.micro_batches = micro_batches
        self.modpo_target = int(modpo_target)
        self.vocab_chunk_size = vocab_chunk_size
        self.time_chunk_size = time_chunk_size
        self.schedule = schedule
        self.donate = bool(donate)
        if not isinstance(first_layer, int) or first_layer < 0:
            raise ValueError(f"first_layer must be an int >= 0, got {first_layer!r}.")
        self.first_layer = first_layer
        if max_completion_length is not None and max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}.")
        self.max_completion_length = max_completion_length
        self.graphdef, _, _ = nnx.split(model, wrt, ...)
        self.ref_graphdef: Any = None
        self._initialised = False
        self.num_traces = 0
        self.compile()

    def compile(
        self,
        state_shardings: Any = None,
        batch_shardings: Any = None,
        metrics_sharding: Any = None,
    ) -> TrainStep:
        """(Re-)jits :meth:`step` and :meth:`eval_step`, optionally with pinned shardings.

        With ``state_shardings`` the train state goes in and comes out with them (so its layout
        never drifts and the step compiles once per batch shape); ``batch_shardings`` (None:
        whatever the batch was placed with) and ``metrics_sharding`` (e.g. replicated) pin the
        other arguments and outputs. The input state is donated when the step was built with
        ``donate=True``.

        Args:
          state_shardings: a :class:`TrainState` of shardings, or None (no constraint).
          batch_shardings: the batch's shardings, or None.
          metrics_sharding: the metrics' sharding, or None.

        Returns:
          ``self``.

        Example: see :func:`raco_jax.train.mesh.shard_train_step`.
        """
        donate = (0,) if self.donate else ()
        if state_shardings is None:
            self._compiled_step = jax.jit(self.step, donate_argnums=donate)
            self._compiled_eval = jax.jit(self.eval_step)
            return self
        self._compiled_step = jax.jit(
            self.step,
            in_shardings=(state_shardings, batch_shardings),
            out_shardings=(state_shardings, metrics_sharding),
            donate_argnums=donate,
        )
        self._compiled_eval = jax.jit(
            self.eval_step,
            in_shardings=(state_shardings, batch_shardings),
            out_shardings=metrics_sharding,
        )
        return self

    # -- state ----------------------------------------------------------------------------

    def init(self, model: nnx.Module, reference_model: nnx.Module | None = None) -> TrainState:
        """Splits ``model`` into (trainable, rest) and initialises the optimizer state.

        With ``reference="online"`` the reference is ``reference_model`` (its full state is
        copied into the train state) or, by default, the starting policy: a copy of the initial
        trainable state only, sharing the frozen ``rest`` (with LoRA adapters that start at zero,
        this is the base model at the cost of the adapters).

        Example: see :class:`TrainStep`.
        """
        graphdef, params, rest = nnx.split(model, self.wrt, ...)
        if graphdef != self.graphdef:
            raise ValueError(
                "model must have the structure of the model the TrainStep was built on."
            )
        ref_state = None
        if self.online:
            if reference_model is None:
                # The reference is the starting policy: only the trainable subset will move, so
                # keep a copy of it and share `rest` (for LoRA: a copy of the adapters only,
                # which start as a zero update, so the reference is the base model).
                ref_graphdef, ref_state = None, params
            elif self.first_layer:
                raise ValueError(
                    "an explicit reference_model cannot start from the policy's layer_inputs "
                    "(first_layer > 0): its lower layers differ."
                )
            else:
                ref_graphdef, ref_state = nnx.split(reference_model)
            if self._initialised and ref_graphdef != self.ref_graphdef:
                raise ValueError(
                    "this TrainStep was initialised with another reference setup (the reference "
                    "structure is baked into the compiled step); build a new TrainStep."
                )
            self.ref_graphdef = ref_graphdef
            ref_state = jax.tree.map(jnp.copy, ref_state)  # not aliased with donated params
        elif reference_model is not None:
            raise ValueError(
                f"reference_model is only used with an online reference, not {self.reference!r}."
            )
        self._initialised = True
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=self.tx.init(params),
            ref_state=ref_state,
        )

    def lower(self, state: TrainState, batch: PreferenceBatch) -> Any:
        """The compiled step lowered for these arguments (``.compile()``, ``.as_text()``, cost
        analysis), as ``jax.jit(...).lower`` gives it.

        Example: ``step.lower(state, batch).compile().as_text()`` is the optimised HLO.
        """
        return self._compiled_step.lower(state, batch)

    def merge(self, state: TrainState) -> nnx.Module:
        """The policy model with the state's parameters.

        Example: ``model = step.merge(state)``.
        """
        return nnx.merge(self.graphdef, state.params, state.rest)

    def __call__(
        self, state: TrainState, batch: PreferenceBatch
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimizer step (jitted once per batch shape). Returns ``(state, metrics)``."""
        self._check_batch(batch)
        return self._compiled_step(state, batch)

    def _check_batch(self, batch: PreferenceBatch, need_micro: bool = True) -> None:
        if not isinstance(batch, PreferenceBatch):
            raise TypeError(f"batch must be a PreferenceBatch, got {type(batch).__name__}.")
        k = batch.num_objectives
        if k != self.num_objectives:
            raise ValueError(
                f"batch.signs has {k} objectives but the step was built for "
                f"{self.num_objectives} ({self.objectives})."
            )
        if need_micro and batch.num_pairs % self.micro_batches:
            raise ValueError(
                f"the batch has {batch.num_pairs} pairs, not divisible into micro_batches="
                f"{self.micro_batches}."
            )
        check_completion_lengths(batch, self.max_completion_length)
        if (batch.layer_inputs is None) != (self.first_layer == 0):
            need = "hold layer_inputs (the stream entering it)" if self.first_layer else "hold none"
            raise ValueError(
                f"the step was built with first_layer={self.first_layer}: batches must {need}."
            )
        if self.reference == "precomputed" and batch.ref_logps is None:
            raise ValueError(
                "batch.ref_logps is None but reference='precomputed': fill it with "
                "raco_jax.train.compute_reference_logps, or use reference='online'."
            )
        if self.method == "modpo" and batch.reward_margins is None:
            raise ValueError("method='modpo' needs batch.reward_margins ([K - 1 or K, B]).")

    # -- the pure step ----------------------------------------------------------------------

    def loss(
        self,
        params: Any,
        rest: Any,
        ref_state: Any,
        batch: PreferenceBatch,
        normalizer: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The differentiated loss of one (micro-)batch and its auxiliary outputs. Pure.

        Args:
          params: the trainable state (``state.params``).
          rest: the frozen rest of the model (``state.rest``).
          ref_state: the online reference's state (``state.ref_state``), or None.
          batch: the (micro-)batch.
          normalizer: ``[K]`` the denominators of each objective's mean (the WHOLE batch's
            :func:`~raco_jax.preference.objective_counts`, so micro-batch losses add up).

        Returns:
          ``(value, aux)``: value is the ``[K]`` objective losses (stacked methods), or the
          scalar weighted loss (``dpo``, ``amopo``) or MODPO loss; aux holds ``logps``,
          ``counts`` (response token counts), ``ref_logps`` and ``objective_losses``.
        """
        model = nnx.merge(self.graphdef, params, rest)
        logps, counts = policy_logps(
            model,
            batch,
            self.vocab_chunk_size,
            self.time_chunk_size,
            self.first_layer,
            self.max_completion_length,
        )
        if self.online:
            if self.ref_graphdef is None:
                ref_model = nnx.merge(self.graphdef, ref_state, rest)
            else:
                ref_model = nnx.merge(self.ref_graphdef, ref_state)
            ref_logps = jax.lax.stop_gradient(
                policy_logps(
                    ref_model,
                    batch,
                    self.vocab_chunk_size,
                    self.time_chunk_size,
                    self.first_layer,
                    self.max_completion_length,
                )[0]
            )
        elif self.reference == "precomputed":
            ref_logps = jnp.asarray(batch.ref_logps, jnp.float32)
        else:
            ref_logps = None
        signs, labeled = batch.signs, batch.labeled
        if self.method == "amopo":
            objective_losses = amopo_losses(
                logps, counts, signs, labeled, self.beta, self.exclude_ties, normalizer
            )
        else:
            normalised = self.loss_type in LENGTH_NORMALISED_LOSS_TYPES
            margins = logps - ref_logps if normalised else pair_margins(logps, ref_logps)
            objective_losses = dpo_losses(
                margins,
                signs,
                labeled,
                beta=self.beta,
                loss_type=self.loss_type,
                label_smoothing=self.label_smoothing,
                lengths=counts if normalised else None,
                exclude_ties=self.exclude_ties,
                normalizer=normalizer,
            )
        aux = {
            "logps": logps,
            "counts": counts,
            "ref_logps": jnp.zeros_like(logps) if ref_logps is None else ref_logps,
            "objective_losses": objective_losses,
        }
        if self.stacked:
            return objective_losses, aux
        if self.method == "modpo":
            loss = modpo_loss(
                pair_margins(logps, ref_logps),
                signs,
                batch.reward_margins,
                self.weights,
                target=self.modpo_target,
                labeled=labeled,
                beta=self.beta,
                exclude_ties=self.exclude_ties,
                normalizer=normalizer[self.modpo_target],
            )
        else:
            loss = self.weights @ objective_losses
        return loss, aux

    def _grads(
        self,
        params: Any,
        rest: Any,
        ref_state: Any,
        batch: PreferenceBatch,
        normalizer: jax.Array,
    ) -> tuple[tuple[jax.Array, dict[str, jax.Array]], Any]:
        fn = functools.partial(
            self.loss, rest=rest, ref_state=ref_state, batch=batch, normalizer=normalizer
        )
        if self.stacked:
            return value_and_objective_grads(fn, has_aux=True)(params)
        return jax.value_and_grad(fn, has_aux=True)(params)

    def step(
        self, state: TrainState, batch: PreferenceBatch
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimizer step: losses, gradients, the chain's update, metrics. Pure, un-jitted
        (``step(state, batch)`` on the object runs the compiled one).

        Returns:
          ``(new_state, metrics)``; the metrics are float32 scalars (see the class docstring).
        """
        self.num_traces += 1
        batch = jax.tree.map(jnp.asarray, batch)
        normalizer = objective_counts(batch.signs, batch.labeled, self.exclude_ties)
        params, rest, ref_state = state.params, state.rest, state.ref_state
        if self.micro_batches == 1:
            (value, aux), grads = self._grads(params, rest, ref_state, batch, normalizer)
        else:
            micro = split_pairs(batch, self.micro_batches)
            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(lambda: self._grads(params, rest, ref_state, first, normalizer))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

            def body(carry: Any, micro_batch: PreferenceBatch) -> tuple[Any, Any]:
                out = self._grads(params, rest, ref_state, micro_batch, normalizer)
                (value, aux), grads = out
                carry_value, carry_grads = carry
                summed = jax.tree.map(jnp.add, carry_grads, grads)
                return (carry_value + value, summed), aux

            (value, grads), stacked_aux = jax.lax.scan(body, (zeros[0][0], zeros[1]), micro)
            aux = self._gather_micro(stacked_aux)

        updates, opt_state = self.tx.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        metrics = self._metrics(batch, value, aux, grads, updates, opt_state, state.step)
        new_state = TrainState(
            step=state.step + 1,
            params=new_params,
            rest=rest,
            opt_state=opt_state,
            ref_state=ref_state,
        )
        return new_state, metrics

    @staticmethod
    def _gather_micro(stacked_aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Micro-batch outputs back to batch layout: [M, 2b] rows -> [2B]; losses summed."""
        out = {}
        for name, value in stacked_aux.items():
            if name == "objective_losses":
                out[name] = jnp.sum(value, axis=0)
                continue
            half = value.shape[1] // 2
            out[name] = jnp.concatenate([value[:, :half].reshape(-1), value[:, half:].reshape(-1)])
        return out

    def loss_metrics(
        self, batch: PreferenceBatch, value: jax.Array, aux: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """The loss-side metrics of a batch (training and evaluation share them).

        ``loss`` (the weighted loss, or MODPO's own), ``loss/<objective>`` and the TRL-style
        ``rewards/<objective>/...`` and ``logps/...`` metrics, from the value and auxiliary
        outputs of the step's loss function.
        """
        objective_losses = aux["objective_losses"]
        metrics: dict[str, jax.Array] = {}
        if self.method == "modpo":
            metrics["loss"] = value
        else:
            metrics["loss"] = self.weights @ objective_losses
        for k, name in enumerate(self.objectives):
            metrics[f"loss/{name}"] = objective_losses[k]
        metrics.update(
            preference_metrics(
                aux["logps"],
                batch.signs,
                batch.labeled,
                ref_logps=None if self.reference == "none" else aux["ref_logps"],
                beta=self.beta,
                objectives=self.objectives,
                lengths=aux["counts"] if self.method == "amopo" else None,
            )
        )
        return metrics

    def eval_step(self, state: TrainState, batch: PreferenceBatch) -> dict[str, jax.Array]:
        """The loss-side metrics of one batch without an update (pure, un-jitted), plus
        ``"counts"``: the ``[K]`` pairs behind each objective's loss (labeled; minus ties with
        ``exclude_ties``), which :meth:`evaluate` needs to pool batches exactly."""
        batch = jax.tree.map(jnp.asarray, batch)
        normalizer = objective_counts(batch.signs, batch.labeled, self.exclude_ties)
        value, aux = self.loss(state.params, state.rest, state.ref_state, batch, normalizer)
        metrics = self.loss_metrics(batch, value, aux)
        metrics = {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}
        metrics["counts"] = normalizer.astype(jnp.float32)
        return metrics

    def evaluate(self, state: TrainState, batches: Iterable[PreferenceBatch]) -> dict[str, float]:
        """The loss-side metrics over all ``batches`` (held-out pairs), pooled exactly.

        Each objective's loss is its mean over ALL its labeled pairs (the per-batch means
        weighted by their pair counts), and ``loss`` is :math:`\\sum_k w_k L_k` of those (MODPO:
        its target objective's loss), so batches that hold pairs of one objective only do not
        count the others as 0. The ``rewards/<objective>/*`` and ``logps/<objective>/*`` means
        are weighted by the objective's decisive pairs (``pairs/<objective>/decisive``, which is
        summed), the pooled ``rewards/*``/``logps/*`` by all decisive (objective, pair) items.
        An objective without any pair gets NaN.

        Args:
          state: the train state.
          batches: placed :class:`~raco_jax.preference.PreferenceBatch` es (padding rows count
            in no mean).

        Returns:
          name -> float (the names of :meth:`loss_metrics`).

        Example:
          >>> import optax
          >>> from flax import nnx
          >>> import raco_jax
          >>> from raco_jax.models import Decoder, ModelConfig
          >>> from raco_jax.preference import make_batch
          >>> from raco_jax.train import TrainStep
          >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
          ...                      intermediate_size=32, num_layers=1, num_heads=2)
          >>> model = Decoder(config, rngs=nnx.Rngs(0))
          >>> step = TrainStep(model, optax.chain(raco_jax.weighted_sum((0.5, 0.5)),
          ...                  optax.sgd(0.1)), method="dpo-lw", objectives=("a", "b"),
          ...                  weights=(0.5, 0.5), reference="online")
          >>> state = step.init(model)
          >>> ids, mask, loss_mask = [[1, 2, 3], [1, 4, 5]], [[1, 1, 1]] * 2, [[0, 1, 1]] * 2
          >>> only_a = make_batch(ids, mask, loss_mask, [[1], [0]], labeled=[[1], [0]])
          >>> only_b = make_batch(ids, mask, loss_mask, [[0], [1]], labeled=[[0], [1]])
          >>> metrics = step.evaluate(state, [only_a, only_b])
          >>> [round(metrics[k], 4) for k in ("loss", "loss/a", "loss/b")]  # log 2 each
          [0.6931, 0.6931, 0.6931]
        """
        names = self.objectives
        sums: dict[str, float] = {}
        totals: dict[str, float] = {}
        added: dict[str, float] = {}
        seen = False
        for batch in batches:
            self._check_batch(batch, need_micro=False)
            metrics = jax.device_get(self._compiled_eval(state, batch))
            seen = True
            counts = [float(c) for c in metrics.pop("counts")]
            decisive = [float(metrics[f"pairs/{name}/decisive"]) for name in names]
            for metric, value in metrics.items():
                parts = metric.split("/")
                if metric == "loss":
                    if self.method != "modpo":
                        continue  # recomputed from the pooled objective losses
                    weight = counts[self.modpo_target]
                elif parts[0] == "pairs":
                    added[metric] = added.get(metric, 0.0) + float(value)
                    continue
                elif parts[0] == "loss":
                    weight = counts[names.index(parts[1])]
                elif len(parts) == 3 and parts[1] in names:
                    weight = decisive[names.index(parts[1])]
                else:
                    weight = sum(decisive)
                sums[metric] = sums.get(metric, 0.0) + weight * float(value)
                totals[metric] = totals.get(metric, 0.0) + weight
        if not seen:
            raise ValueError("evaluate needs at least one batch.")
        pooled = {
            metric: sums[metric] / totals[metric] if totals[metric] > 0 else float("nan")
            for metric in sums
        }
        if self.method != "modpo":
            losses = [pooled[f"loss/{name}"] for name in names]
            weighted = [float(w) * lk for w, lk in zip(self.weights, losses, strict=True) if w > 0]
            pooled["loss"] = float(sum(weighted))
        pooled.update(added)
        return {"loss": pooled.pop("loss"), **pooled}

    def _metrics(
        self,
        batch: PreferenceBatch,
        value: jax.Array,
        aux: dict[str, jax.Array],
        grads: Any,
        updates: Any,
        opt_state: Any,
        step: jax.Array,
    ) -> dict[str, jax.Array]:
        metrics = self.loss_metrics(batch, value, aux)
        metrics["update_norm"] = optax.tree.norm(updates)
        if self.stacked:
            metrics.update(self._aggregation_metrics(grads, opt_state))
        else:
            metrics["grad_norm"] = optax.tree.norm(grads)
        learning_rate = _first(opt_state, "learning_rate")
        if self.schedule is not None:
            metrics["learning_rate"] = jnp.asarray(self.schedule(step), jnp.float32)
        elif learning_rate is not None and jnp.ndim(learning_rate) == 0:
            metrics["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
        return {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}

    def _aggregation_metrics(self, grads: Any, opt_state: Any) -> dict[str, jax.Array]:
        k = self.num_objectives
        names = self.objectives
        weights = self.weights

        def k_shaped(key: str, shape: tuple[int, ...]) -> jax.Array | None:
            value = _first(opt_state, key)
            if value is None or jnp.shape(value) != shape:
                return None
            return jnp.asarray(value, jnp.float32)

        gram = k_shaped("gram", (k, k))
        if gram is None:  # the chain records no Gram matrix (K unknown at init): compute it
            gram = gram_matrix(grads)
        coefficients = k_shaped("coefficients", (k,))
        dual = k_shaped("dual", (k,))
        out: dict[str, jax.Array] = {}
        diag = jnp.diagonal(gram)
        for i, name in enumerate(names):
            out[f"grad_norm/{name}"] = _safe_sqrt(diag[i])
        out["grad_norm/anchor"] = _safe_sqrt(weights @ gram @ weights)
        out["grad_norm"] = (
            out["grad_norm/anchor"]
            if coefficients is None
            else _safe_sqrt(coefficients @ gram @ coefficients)
        )
        for i in range(k):
            for j in range(i + 1, k):
                den = diag[i] * diag[j]
                cos = jnp.where(
                    den > 0, gram[i, j] * jax.lax.rsqrt(jnp.where(den > 0, den, 1.0)), 0.0
                )
                out[f"aggregation/cos/{names[i]}/{names[j]}"] = cos
        if coefficients is not None:
            for i, name in enumerate(names):
                out[f"aggregation/coefficients/{name}"] = coefficients[i]
        if dual is not None:
            for i, name in enumerate(names):
                out[f"aggregation/dual/{name}"] = dual[i]
            if self.method in ("raco", "cagrad"):  # clip activity: k with p*_k > w_k
                out["aggregation/num_clipped"] = jnp.sum(dual > weights + 1e-6)
        for key in ("duality_gap", "num_conflicts", "cos_update_anchor"):
            value = _first(opt_state, key)
            if value is not None and jnp.ndim(value) == 0:
                out[f"aggregation/{key}"] = value
        return out


def make_train_step(
    model: nnx.Module, tx: optax.GradientTransformation, **kwargs: Any
) -> tuple[TrainStep, TrainState]:
    """Builds a :class:`TrainStep` and its initial state: ``step, state = make_train_step(...)``.

    Keyword arguments are those of :class:`TrainStep`, plus ``reference_model`` for ``init``.

    Example:
      >>> from flax import nnx
      >>> from raco_jax.models import Decoder, ModelConfig
      >>> from raco_jax.train import make_optimizer, make_train_step
      >>> config = ModelConfig(model_type="qwen3", vocab_size=32, hidden_size=16,
      ...                      intermediate_size=32, num_layers=1, num_heads=2)
      >>> model = Decoder(config, rngs=nnx.Rngs(0))
      >>> step, state = make_train_step(model, make_optimizer("raco", (0.5, 0.5)), method="raco",
      ...                               objectives=("a", "b"), weights=(0.5, 0.5))
      >>> int(state.step)
      0
    """
    reference_model = kwargs.pop("reference_model", None)
    step = TrainStep(model, tx, **kwargs)
    return step, step.init(model, reference_model=reference_model)
