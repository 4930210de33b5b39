"""Built-in submissions with weight averaging (optbench.plugins.averaging): AdamW and SGD evaluated at an EMA of their
weights (half-life ``ema_halflife`` steps) or at the tail mean (``-o average=tail -o tail_frac=0.5``).

``adamw_avg`` with ``-o schedule=constant`` or ``-o schedule=invsqrt`` is the horizon-free recipe of Meterez, Nair,
Morwani et al., "Anytime Pretraining"; ``-o average=none`` is the base submission itself.
"""

from __future__ import annotations

from optbench.plugins.averaging import averaged_submission
from optbench_submissions.adamw import adamw as _adamw
from optbench_submissions.sgd import sgd as _sgd

adamw_avg = averaged_submission(_adamw)
sgd_avg = averaged_submission(_sgd)
