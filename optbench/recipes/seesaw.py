"""``optbench seesaw``: Seesaw against its step-decay twin at equal examples, one pair of trials per seed.

The twin (variant ``step``, recorded as ``<name>_step``) runs ``twin_steps`` steps of step decay; Seesaw (variant
``seesaw``, ``seesaw_<name>``) replaces each learning-rate cut by a smaller cut and a batch-size increase, and runs
the serial steps that see the same examples. Both run their whole budget; steps and examples to the target are
read from their evaluations afterwards.

References:
  Meterez et al., "Seesaw: accelerating training by balancing learning rate and batch size scheduling" (2025).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from optbench.engine.prepared import MAX_STEPS, TrialConfig
from optbench.errors import UsageError
from optbench.options import option
from optbench.recipes.budgets import steps_budget
from optbench.recipes.common import median_interval
from optbench.sweep.engine import Planned, SweepResult

SEESAW_SEEDS = 6  # stats.min_seeds_for(0.05, two_sided=True): fewer cannot give p < 0.05 (tests pin the two equal)


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one trial of a Seesaw comparison gave: serial steps and examples run, the tail-mean metric (over the
    evaluations in the last ``tail`` of the examples), and steps/examples to the workload's target (None: missed)."""

    steps: int
    examples: int
    tail_metric: float
    final_metric: float
    steps_to_target: int | None
    examples_to_target: int | None


def summarize_rows(rows: Sequence[Any], *, target: float, goal: str, tail: float = 0.1) -> RunSummary:
    """A :class:`RunSummary` of evaluation rows (``EvalRow``)."""
    from optbench.api import reached

    last = rows[-1]
    vals = [r.metric_value for r in rows if r.examples >= (1.0 - tail) * last.examples]
    hit = next((r for r in rows if reached(r.metric_value, target, goal)), None)
    return RunSummary(steps=last.step, examples=last.examples, tail_metric=sum(vals) / len(vals),
                      final_metric=last.metric_value, steps_to_target=hit.step if hit else None,
                      examples_to_target=hit.examples if hit else None)


@dataclass(frozen=True, kw_only=True)
class SeesawSpec:
    """Seesaw against its step-decay twin, at equal examples, one pair of trials per seed; the target (for steps and
    examples to target), evaluation period and the rest are the trials' options."""

    workload: str = option("linreg", "--workload", "Workload.", kind="text", short="-w", show_default=True)
    submission: str = option("sgd", "--opt", "A scheduled submission.", kind="text", short="-s", show_default=True)
    seeds: tuple[int, ...] = option(tuple(range(SEESAW_SEEDS)), "--seed", "Seed (repeatable): one twin and one "
                                    "Seesaw trial each; the default 6 let the two-sided paired test reach p < 0.05.",
                                    kind="int", low=0, high=2**63 - 1, multiple=True, show_default=True)
    twin_steps: int | None = option(None, "--twin-steps", "Steps of the twin [default: the size's step_hint].",
                                    kind="int", low=1, high=MAX_STEPS)


def plan_seesaw(spec: SeesawSpec, base: TrialConfig) -> list[Planned]:
    """Per seed, the twin for ``twin_steps`` and Seesaw for the serial steps that see the same examples (study
    ``seesaw-seed<N>``; tags ``seed`` and ``arm``)."""
    from optbench.engine.prepared import resolve_size
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.plugins.seesaw import SEESAW_DEFAULTS, steps_at_equal_examples
    from optbench.plugins.variants import apply_variant

    size = resolve_size(load_workload(spec.workload).obj, base.size)
    seesaw = apply_variant(load_submission(spec.submission), "seesaw").obj
    twin_steps = spec.twin_steps or size.step_hint
    try:
        serial = steps_at_equal_examples({**seesaw.defaults, **base.hparams}, step_hint=size.step_hint,
                                         twin_steps=twin_steps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    base = replace(steps_budget(base), full_budget=True, study_kind="seesaw", varies=("schedule", "batch_size"))
    twin_hp = {k: v for k, v in base.hparams.items() if k not in SEESAW_DEFAULTS}
    plan = []
    for seed in spec.seeds:
        common = replace(base, seed=seed, study=f"seesaw-seed{seed}")
        plan.append(Planned(workload=spec.workload, submission=spec.submission, tags={"seed": seed, "arm": "twin"},
                            config=replace(common, hparams=twin_hp, max_steps=twin_steps, variant="step")))
        plan.append(Planned(workload=spec.workload, submission=spec.submission, tags={"seed": seed, "arm": "seesaw"},
                            config=replace(common, max_steps=serial, variant="seesaw")))
    return plan


def seesaw_pairs(result: SweepResult) -> list[tuple[int, RunSummary, RunSummary]]:
    """(seed, twin, seesaw) for every seed whose two trials are recorded, each summarised against its target."""
    arms: dict[int, dict[str, RunSummary]] = {}
    for o in result.results():
        rec, rows = o.read()
        if len(rows):
            arms.setdefault(o.planned.tags["seed"], {})[o.planned.tags["arm"]] = summarize_rows(
                list(rows.itertuples()), target=rec["target"], goal=rec["metric_goal"])
    return [(seed, a["twin"], a["seesaw"]) for seed, a in arms.items() if len(a) == 2]


def seesaw_markdown(pairs: Sequence[tuple[int, RunSummary, RunSummary]], *, metric: str) -> str:
    """Per seed and summed up: serial steps, examples, tail-mean metric, steps and examples to target, and the
    median paired ratio Seesaw / twin of the tail metric with its order-statistic interval over seeds (its
    coverage and n stated), and the paired tests (:func:`paired_lines`)."""
    def opt(x: int | None) -> str:
        return "missed" if x is None else str(x)

    lines = [f"| seed | run | serial steps | examples | tail-mean {metric} | final {metric} | steps to target | "
             "examples to target |", "|---|---|---|---|---|---|---|---|"]
    for seed, a, b in pairs:
        for name, r in (("twin (step decay)", a), ("seesaw", b)):
            lines.append(f"| {seed} | {name} | {r.steps} | {r.examples} | {r.tail_metric:.4g} | {r.final_metric:.4g} | "
                         f"{opt(r.steps_to_target)} | {opt(r.examples_to_target)} |")
    ratio = median_interval([b.tail_metric / a.tail_metric for _, a, b in pairs])
    both = [(a, b) for _, a, b in pairs if a.steps_to_target and b.steps_to_target]
    steps = median_interval([b.steps_to_target / a.steps_to_target for a, b in both])
    lines += ["", f"Seesaw / twin, tail-mean {metric} at equal examples: median {ratio.estimate:.3f} "
              f"({_interval(ratio)}); serial steps "
              f"{pairs[0][2].steps} vs {pairs[0][1].steps} ({pairs[0][2].steps / pairs[0][1].steps:.0%})."]
    if both:
        lines.append(f"Seesaw / twin, steps to the target: median {steps.estimate:.3f} ({_interval(steps)}; "
                     f"{len(both)} seed(s) where both reached).")
    return "\n".join(lines + paired_lines(pairs, metric=metric)) + "\n"


def _interval(ci: Any) -> str:
    """``0.95-1.02, 75% order-statistic interval, n=3`` (or ``no interval, n=1``)."""
    return ci.label() if math.isnan(ci.low) else f"{ci.low:.3f}-{ci.high:.3f}, {ci.label()}"


def paired_lines(pairs: Sequence[tuple[int, RunSummary, RunSummary]], *, metric: str,
                 alpha: float = 0.05) -> list[str]:
    """Exact two-sided sign-flip tests, paired by seed, of Seesaw against its twin on the tail-mean metric and on
    steps to target (a miss counts as slower), and a note when the seeds run cannot reach ``p < alpha``."""
    import pandas as pd

    from optbench.scoring.stats import paired_test, significance_note

    def steps(x: int | None) -> float:
        return math.inf if x is None else float(x)

    out = [""]
    for what, value in ((f"tail-mean {metric}", lambda r: r.tail_metric),
                        ("steps to target", lambda r: steps(r.steps_to_target))):
        per_seed = {"twin": pd.Series({s: value(a) for s, a, _ in pairs}, dtype=float),
                    "seesaw": pd.Series({s: value(b) for s, _, b in pairs}, dtype=float)}
        t = paired_test(None, workload="", a="seesaw", b="twin", by="steps", alternative="two-sided",
                        per_seed=per_seed)
        lower = int((per_seed["seesaw"] < per_seed["twin"]).sum())  # the direction, which p alone does not say
        out.append(f"Paired test, {what} (Seesaw vs twin, exact two-sided sign-flip): p = {t.p_value:.3g} over "
                   f"{t.n_pairs} seeds ({t.n_used} informative; Seesaw's lower in {lower} of them).")
    note = significance_note(len(pairs), [f"Seesaw vs twin ({metric}, steps to target)"], alpha=alpha)
    return out + ([f"Note: {note}."] if note else [])


