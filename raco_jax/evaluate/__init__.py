"""Evaluation: judges, Pareto fronts, exact hypervolume, pairwise win rates and front reports.

A weight sweep is evaluated in three steps: score each run's responses to held-out prompts with
a judge (:mod:`raco_jax.evaluate.judges`, named by specs in :mod:`raco_jax.evaluate.judge_specs`;
higher is better on every objective), summarise them per run (:func:`summarize_scores`), and
compare the methods' fronts (:mod:`raco_jax.evaluate.pareto`, :mod:`raco_jax.evaluate.report`)
by hypervolume with a stated reference point and normalisation, and by win rate
(wins + 0.5 ties) / n. :func:`evaluate_runs` does all three for saved runs
(:mod:`raco_jax.evaluate.judged_runs`, with :mod:`raco_jax.evaluate.responses` for prompts and
generation). Without generation, :func:`evaluate_preference_runs` scores saved runs on held-out
preference pairs (implicit-reward accuracy, margin and DPO loss per objective,
:mod:`raco_jax.evaluate.preferences`); :mod:`raco_jax.evaluate.statistics` puts error bars on
sweeps over seeds and pairs (paired differences, bootstrap intervals of the hypervolume).

The package sits above :mod:`raco_jax.train` (it loads saved runs); matplotlib, torch and
transformers are imported by the functions that need them.

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

from raco_jax.evaluate.judge_specs import (
    JudgeSpec,
    judge_objectives,
    make_judges,
    parse_judge_spec,
)
from raco_jax.evaluate.judged_runs import evaluate_runs
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
    orientation,
    pareto_front,
    win_rate,
)
from raco_jax.evaluate.preferences import (
    PreferenceEvaluation,
    evaluate_preference_runs,
    pair_metrics,
    pair_outcomes,
    pair_rewards,
)
from raco_jax.evaluate.report import (
    FrontReport,
    front_table,
    method_hypervolumes,
    plot_fronts,
    write_front_report,
)
from raco_jax.evaluate.responses import (
    GeneratedResponses,
    generate_responses,
    greedy_responses,
    held_out_prompts,
    prompt_text,
)
from raco_jax.evaluate.statistics import (
    bootstrap_hypervolume,
    paired_difference,
    seed_summary,
)

__all__ = [
    "BaseJudge",
    "CombinedJudge",
    "FrontReport",
    "GeneratedResponses",
    "HypervolumeResult",
    "ImplicitRewardJudge",
    "Judge",
    "JudgeSpec",
    "LengthJudge",
    "LexiconJudge",
    "PreferenceEvaluation",
    "RewardModelJudge",
    "bootstrap_hypervolume",
    "dominates",
    "evaluate_preference_runs",
    "evaluate_runs",
    "front_table",
    "generate_responses",
    "greedy_responses",
    "held_out_prompts",
    "hypervolume",
    "judge_objectives",
    "make_judges",
    "method_hypervolumes",
    "orientation",
    "pair_metrics",
    "pair_outcomes",
    "pair_rewards",
    "paired_difference",
    "pareto_front",
    "parse_judge_spec",
    "plot_fronts",
    "prompt_text",
    "seed_summary",
    "summarize_scores",
    "win_rate",
    "write_front_report",
]
