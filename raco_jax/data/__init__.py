"""Multi-objective preference data: the pair model, dataset schemas, tokenisation and batching.

* :mod:`raco_jax.data.pairs`: :class:`PreferencePair` (prompt, response a, response b, one sign
  in {+1, -1, 0} per labeled objective) and :func:`objective_signs`.
* :mod:`raco_jax.data.schemas`: :func:`load_preferences` and the schema registry
  (:func:`register_schema`); built in: ``pku-saferlhf``, ``reddit-summary``, ``hh-rlhf``,
  ``summarize-from-feedback``, ``ultrafeedback``, ``helpsteer2``, ``generic``.
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

from raco_jax.data.pairs import (
    Conversation,
    Message,
    PreferencePair,
    Text,
    objective_signs,
)
from raco_jax.data.schemas import (
    LoadReport,
    MalformedRow,
    Schema,
    SchemaContext,
    SchemaError,
    get_schema,
    list_schemas,
    load_preferences,
    pairing_indices,
    register_schema,
    unregister_schema,
)
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
    "get_schema",
    "list_schemas",
    "load_preferences",
    "objective_signs",
    "pairing_indices",
    "register_schema",
    "render_pair",
    "tokenize_pairs",
    "unregister_schema",
]
