"""Multi-objective preference data: the pair model, dataset schemas, tokenisation and batching.

* :mod:`raco_jax.data.pairs`: :class:`PreferencePair` (prompt, response a, response b, one sign
  in {+1, -1, 0} per labeled objective), :func:`objective_signs`, :func:`sample_pairs`, :func:`conflict_rates` and
  :func:`conflicting_pairs`.
* :mod:`raco_jax.data.schemas`: the schema registry (:func:`register_schema`) and the parsers
  adapters share; :mod:`raco_jax.data.adapters`: the built-in schemas ``pku-saferlhf``,
  ``reddit-summary``, ``hh-rlhf``, ``summarize-from-feedback``, ``ultrafeedback``,
  ``helpsteer2``, ``qa-feedback`` and ``generic``; :mod:`raco_jax.data.sources`:
  :func:`load_preferences` (hub ids, files, directories, datasets, rows).
* :mod:`raco_jax.data.derived`: objectives labeled from the responses themselves, added to any
  schema (``concise``: the shorter response is preferred, in the model's tokens).
* :mod:`raco_jax.data.tokenize`: :func:`tokenize_pairs`, :class:`PreferenceBatchIterator` and the
  batch format (``input_ids``, ``attention_mask``, ``loss_mask`` ``[2B, T]``; ``signs``,
  ``labeled`` ``[K, B]``).

Importing this package is cheap: ``datasets``, ``tokenizers`` and ``transformers`` are imported
only by the functions that need them.

>>> pairs, report = load_preferences(
...     [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "sign_helpful": 1}], "generic")
>>> pairs[0].signs, report.objectives
({'helpful': 1}, ('helpful',))
"""

from __future__ import annotations

from raco_jax.data import adapters as adapters  # registers the built-in schemas
from raco_jax.data.derived import (
    derived_objectives,
    derived_sign,
    register_derived_objective,
    unregister_derived_objective,
)
from raco_jax.data.pairs import (
    Conversation,
    Message,
    PreferencePair,
    Text,
    conflict_rates,
    conflicting_pairs,
    objective_signs,
    sample_pairs,
)
from raco_jax.data.schemas import (
    LoadReport,
    MalformedRow,
    Schema,
    SchemaContext,
    SchemaError,
    get_schema,
    list_schemas,
    pairing_indices,
    register_schema,
    unregister_schema,
)
from raco_jax.data.sources import load_preferences, parse_dataset_source
from raco_jax.data.tokenize import (
    BATCH_KEYS,
    PreferenceBatchIterator,
    TokenizedPairs,
    bucket_length,
    byte_tokenizer,
    render_pair,
    tokenize_pairs,
)

__all__ = [
    "BATCH_KEYS",
    "Conversation",
    "LoadReport",
    "MalformedRow",
    "Message",
    "PreferenceBatchIterator",
    "PreferencePair",
    "Schema",
    "SchemaContext",
    "SchemaError",
    "Text",
    "TokenizedPairs",
    "bucket_length",
    "byte_tokenizer",
    "conflict_rates",
    "conflicting_pairs",
    "derived_objectives",
    "derived_sign",
    "get_schema",
    "list_schemas",
    "load_preferences",
    "objective_signs",
    "pairing_indices",
    "parse_dataset_source",
    "register_derived_objective",
    "register_schema",
    "render_pair",
    "sample_pairs",
    "tokenize_pairs",
    "unregister_derived_objective",
    "unregister_schema",
]
