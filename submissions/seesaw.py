"""Seesaw (Meterez, Morwani, Wu et al. 2025, arXiv 2510.14717) over SGD and AdamW, and their step-decay twins.

``seesaw_sgd`` doubles the batch and divides the learning rate by sqrt(2) wherever ``sgd_step`` (SGD with step
decay, factor 1/2 at 50% and 75% of the step hint by default) halves it; see :mod:`optbench.plugins.seesaw`. The twins
accept every schedule key (``-o decay_milestones=[0.25,0.5,0.75]``), as do the Seesaw submissions.
"""

from __future__ import annotations

from optbench.plugins.seesaw import STEP_DEFAULTS, seesaw_submission
from optbench.plugins.wrapping import with_schedule_keys
from optbench_submissions.adamw import adamw as _adamw
from optbench_submissions.sgd import sgd as _sgd

seesaw_sgd = seesaw_submission(_sgd)
seesaw_adamw = seesaw_submission(_adamw)
sgd_step = with_schedule_keys(_sgd, name="sgd_step", defaults=STEP_DEFAULTS)
adamw_step = with_schedule_keys(_adamw, name="adamw_step", defaults=STEP_DEFAULTS)
