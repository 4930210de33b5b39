"""What a recipe's trials are budgeted in. Every recipe that trains measures steps (steps to a target, or the metric
after a fixed number of steps), so its trials run without a seconds budget unless ``--max-seconds`` gives one: a
slow or loaded machine then cannot turn a reach into a miss, nor cut a fixed-steps trial short. A trial that still
ends on a seconds budget records ``stopped_by = "seconds"``, and the recipe says so under its tables.
"""

from __future__ import annotations

from dataclasses import replace

from optbench.engine.prepared import MAX_SECONDS, TrialConfig

# "No seconds budget": a TrialConfig's None means the size's own budget, so the absence of one is the largest
# --max-seconds there is (about 32 years), which no trial reaches.
UNBOUNDED_SECONDS = MAX_SECONDS


def steps_budget(base: TrialConfig) -> TrialConfig:
    """``base`` without a seconds budget, unless ``--max-seconds`` was given (then it is the user's to keep)."""
    return base if base.max_seconds is not None else replace(base, max_seconds=UNBOUNDED_SECONDS)
