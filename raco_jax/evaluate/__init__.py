"""Evaluation: judges, Pareto fronts, exact hypervolume, pairwise win rates and front reports.

A weight sweep is evaluated in three steps: score each run's responses to held-out prompts with
a judge (:mod:`raco_jax.evaluate.judges`; higher is better on every objective), summarise them
per run (:func:`summarize_scores`), and compare the methods' fronts
(:mod:`raco_jax.evaluate.pareto`, :mod:`raco_jax.evaluate.report`) by hypervolume with a stated
reference point and normalisation, and by win rate (wins + 0.5 ties) / n. Without generation,
:func:`evaluate_preference_runs` scores saved runs on held-out preference pairs (implicit-reward
accuracy, margin and DPO loss per objective, :mod:`raco_jax.evaluate.preferences`).

Importing this package needs only NumPy; matplotlib, torch and transformers are imported by
the functions that need them.

Example:
  >>> from raco_jax import evaluate
  >>> judge = evaluate.CombinedJudge(
  ...     [evaluate.LengthJudge(), evaluate.LexiconJudge(["idiot"], "harmlessness")])
  >>> scores = judge(["Hi?", "Hi?"], ["Hello there.", "Hello, idiot."])
  >>> evaluate.win_rate(scores["harmlessness"], [0.0, 0.0])
  0.25
  >>> float(evaluate.hypervolume([[1.0, 2.0], [2.0, 1.0]], reference=[0.0, 0.0]))
  3.0
"""

from __future__ import annotations

from raco_jax.evaluate.judges import (
    BaseJudge,
    CombinedJudge,
    ImplicitRewardJudge,
    Judge,
    LengthJudge,
    LexiconJudge,
    RewardModelJudge,
    summarize_scores,
)
from raco_jax.evaluate.pareto import (
    HypervolumeResult,
    dominates,
    hypervolume,
    pareto_front,
    win_rate,
)
from raco_jax.evaluate.preferences import (
    PreferenceEvaluation,
    evaluate_preference_runs,
    pair_metrics,
)
from raco_jax.evaluate.report import (
    FrontReport,
    front_table,
    method_hypervolumes,
    plot_fronts,
    write_front_report,
)

__all__ = [
    "BaseJudge",
    "CombinedJudge",
    "FrontReport",
    "HypervolumeResult",
    "ImplicitRewardJudge",
    "Judge",
    "LengthJudge",
    "LexiconJudge",
    "PreferenceEvaluation",
    "RewardModelJudge",
    "dominates",
    "evaluate_preference_runs",
    "front_table",
    "hypervolume",
    "method_hypervolumes",
    "pair_metrics",
    "pareto_front",
    "plot_fronts",
    "summarize_scores",
    "win_rate",
    "write_front_report",
]
