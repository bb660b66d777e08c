"""Objectives derived from the responses themselves, added to any schema's labels.

A derived objective labels EVERY pair from its two responses, so it can join the human labels
of any schema: ``objectives=("helpful", "concise")`` on ``hh-rlhf``, ``("quality", "concise")`` on
``qa-feedback``. Its sign is computed by :func:`~raco_jax.data.tokenize_pairs` from the token
ids of the two completions, in the model's own tokenizer.

Built in:

* ``concise``: the shorter response is preferred (``+1`` when response a has fewer completion
  tokens, ``-1`` when it has more, ``0`` (a tie) on equal length), as the RACO authors' code
  derives its verbosity sign when no label is given. The length counted is the completion as
  :func:`~raco_jax.data.tokenize_pairs` renders it (after the chat template's prompt, including
  the end-of-turn token), before any truncation to ``max_length``.

:func:`register_derived_objective` adds others (a function of the two completions' token ids).

Example:
    >>> from raco_jax.data import derived_objectives, derived_sign
    >>> derived_objectives()
    ('concise',)
    >>> derived_sign("concise", [5, 6, 7], [5, 6]), derived_sign("concise", [1], [2])
    (-1, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = [
    "derived_objectives",
    "derived_sign",
    "register_derived_objective",
    "unregister_derived_objective",
]

SignFn = Callable[[Sequence[int], Sequence[int]], int]


def _concise(ids_a: Sequence[int], ids_b: Sequence[int]) -> int:
    return (len(ids_a) < len(ids_b)) - (len(ids_a) > len(ids_b))


_DERIVED: dict[str, SignFn] = {"concise": _concise}


def register_derived_objective(name: str, sign: SignFn, *, overwrite: bool = False) -> None:
    """Registers a derived objective: ``sign(completion_ids_a, completion_ids_b)`` -> +1
    (response a preferred), -1 (b preferred) or 0 (tie).

    Example:
        >>> from raco_jax.data import (derived_objectives, register_derived_objective,
        ...                            unregister_derived_objective)
        >>> register_derived_objective("verbose", lambda a, b: (len(a) > len(b)) - (len(a) < len(b)))
        >>> "verbose" in derived_objectives()
        True
        >>> unregister_derived_objective("verbose")
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(sign):
        raise TypeError(f"sign must be callable, got {sign!r}")
    if name in _DERIVED and not overwrite:
        raise ValueError(f"derived objective {name!r} is already registered; pass overwrite=True")
    _DERIVED[name] = sign


def unregister_derived_objective(name: str) -> None:
    """Removes a registered derived objective (see :func:`register_derived_objective`)."""
    if _DERIVED.pop(name, None) is None:
        raise ValueError(f"derived objective {name!r} is not registered")


def derived_objectives() -> tuple[str, ...]:
    """The names of the derived objectives.

    Example: see the module docstring.
    """
    return tuple(_DERIVED)


def derived_sign(name: str, ids_a: Sequence[int], ids_b: Sequence[int]) -> int:
    """The sign of derived objective ``name`` for a pair's two completions (token ids).

    Raises:
        ValueError: an unknown name.

    Example: see the module docstring.
    """
    if name not in _DERIVED:
        raise ValueError(f"unknown derived objective {name!r}; known: {list(_DERIVED)}")
    sign = int(_DERIVED[name](ids_a, ids_b))
    if sign not in (-1, 0, 1):
        raise ValueError(f"derived objective {name!r} gave sign {sign}; expected +1, -1 or 0")
    return sign
