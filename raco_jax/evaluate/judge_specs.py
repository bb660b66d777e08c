"""Judge specs: the ``--judge`` strings of ``raco-jax sweep`` and ``raco-jax evaluate``.

A spec names a judge of :mod:`raco_jax.evaluate.judges` and the objective it scores:
``length[:objective]``, ``lexicon:FILE[:objective[:positive]]``, ``reward-model:DIR[:objective]``
and ``implicit[:objective]`` (:func:`make_judges`).

Example:
    >>> from raco_jax.evaluate.judge_specs import judge_objectives
    >>> judge_objectives(["length", "reward-model:rm/:helpful"])
    ('conciseness', 'helpful')
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from raco_jax.evaluate.judges import (
    CombinedJudge,
    ImplicitRewardJudge,
    LengthJudge,
    LexiconJudge,
    RewardModelJudge,
)

__all__ = [
    "DEFAULT_OBJECTIVES",
    "JudgeSpec",
    "judge_objectives",
    "make_judges",
    "parse_judge_spec",
]


@dataclasses.dataclass(frozen=True)
class JudgeSpec:
    """A parsed judge spec ``kind[:argument][:objective][:option]``.

    Attributes:
      kind: ``length``, ``lexicon``, ``reward-model`` or ``implicit``.
      argument: the lexicon file or reward-model directory (None for the others).
      objective: the objective it scores (None: the kind's default, :data:`DEFAULT_OBJECTIVES`).
      option: the lexicon's polarity (``positive`` or ``negative``), or None.
    """

    kind: str
    argument: str | None
    objective: str | None
    option: str | None

    @property
    def objective_name(self) -> str:
        """The objective this judge scores (its own, or the kind's default)."""
        return self.objective or DEFAULT_OBJECTIVES[self.kind]


#: The objective each kind of judge scores when its spec names none.
DEFAULT_OBJECTIVES = {
    "length": "conciseness",
    "lexicon": "harmlessness",
    "reward-model": "reward",
    "implicit": "implicit_reward",
}


def parse_judge_spec(spec: str) -> JudgeSpec:
    """Parses one judge spec (see :func:`make_judges` for the forms).

    Raises:
        ValueError: an unknown kind or a missing path, naming the spec.

    Example:
        >>> from raco_jax.evaluate.judge_specs import parse_judge_spec
        >>> parse_judge_spec("lexicon:bad.txt:safety").objective_name
        'safety'
        >>> parse_judge_spec("length").objective_name
        'conciseness'
    """
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "length":
        return JudgeSpec(kind, None, parts[0] if parts else None, None)
    if kind == "implicit":
        return JudgeSpec(kind, None, parts[0] if parts else None, None)
    if kind in ("lexicon", "reward-model"):
        if not parts or not parts[0]:
            raise ValueError(f"judge {spec!r}: {kind} needs a path, e.g. {kind}:PATH.")
        option = parts[2] if len(parts) > 2 else None
        if kind == "lexicon" and option not in (None, "positive", "negative"):
            raise ValueError(f"judge {spec!r}: the polarity must be 'positive' or 'negative'.")
        return JudgeSpec(kind, parts[0], parts[1] if len(parts) > 1 else None, option)
    raise ValueError(
        f"unknown judge {spec!r}; use length[:objective], lexicon:FILE[:objective[:positive]], "
        "reward-model:DIR[:objective] or implicit[:objective]."
    )


def make_judges(
    specs: Sequence[str],
    *,
    policy_logps: Callable[[list[str], list[str]], Any] | None = None,
    reference_logps: Callable[[list[str], list[str]], Any] | None = None,
    beta: float = 0.1,
) -> Any:
    """A :class:`~raco_jax.evaluate.CombinedJudge` from judge specs (higher is better):

    * ``length[:objective]``: :class:`~raco_jax.evaluate.LengthJudge`, minus the length in
      words (default objective ``conciseness``);
    * ``lexicon:FILE[:objective[:positive]]``: :class:`~raco_jax.evaluate.LexiconJudge` with
      the words of FILE (one per line; ``#`` comments), counted as bad (default objective
      ``harmlessness``) or, with ``positive``, as good;
    * ``reward-model:DIR[:objective]``: :class:`~raco_jax.evaluate.RewardModelJudge` (a
      sequence-classification model; default objective ``reward``);
    * ``implicit[:objective]``: :class:`~raco_jax.evaluate.ImplicitRewardJudge`
      ``beta * (policy_logps - reference_logps)`` (default objective ``implicit_reward``);
      needs the two log-prob functions.

    Example:
        >>> import pathlib, tempfile
        >>> from raco_jax.evaluate import make_judges
        >>> lexicon = pathlib.Path(tempfile.mkdtemp()) / "bad.txt"
        >>> _ = lexicon.write_text("petrol\\nburn\\n")
        >>> judge = make_judges(["length", f"lexicon:{lexicon}"])
        >>> judge.objectives
        ('conciseness', 'harmlessness')
        >>> judge(["q"], ["Burn it with petrol."])["harmlessness"].tolist()
        [-0.5]
    """
    if not specs:
        raise ValueError("no judge: give at least one --judge (e.g. --judge length).")
    judges = []
    for spec in specs:
        parsed = parse_judge_spec(spec)
        if parsed.kind == "length":
            judges.append(LengthJudge(parsed.objective_name))
        elif parsed.kind == "lexicon":
            path = pathlib.Path(str(parsed.argument))
            if not path.is_file():
                raise ValueError(f"judge {spec!r}: lexicon file {path} does not exist.")
            words = [
                line.strip()
                for line in path.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
            judges.append(
                LexiconJudge(
                    words,
                    parsed.objective_name,
                    polarity="positive" if parsed.option == "positive" else "negative",
                )
            )
        elif parsed.kind == "reward-model":
            judges.append(RewardModelJudge(str(parsed.argument), objective=parsed.objective_name))
        else:
            if policy_logps is None or reference_logps is None:
                raise ValueError(f"judge {spec!r} needs a policy and a reference model.")
            judges.append(
                ImplicitRewardJudge(
                    policy_logps,
                    reference_logps,
                    beta=beta,
                    objective=parsed.objective_name,
                )
            )
    return CombinedJudge(judges)


def judge_objectives(specs: Sequence[str]) -> tuple[str, ...]:
    """The objectives judge specs score, in order; each at most once.

    Raises:
        ValueError: two judges score the same objective, or a spec is malformed.

    Example:
        >>> from raco_jax.evaluate import judge_objectives
        >>> judge_objectives(["length", "implicit:helpful"])
        ('conciseness', 'helpful')
    """
    names = tuple(parse_judge_spec(spec).objective_name for spec in specs)
    if len(set(names)) != len(names):
        raise ValueError(f"the judges score the same objective twice: {list(names)}.")
    return names
