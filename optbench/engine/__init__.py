"""Layer 4, engine: one trial, from the values a user gave to its recorded result.

Owns validation (:mod:`~optbench.engine.prepared`: ``TrialConfig`` -> :func:`~optbench.engine.prepared.prepare`,
every bound checked once -> ``PreparedTrial``, the trial's identity digest), the trial runner
(:mod:`~optbench.engine.runner`: the step loop, evaluations, stopping, every failure turned into an outcome, the
``TrialRecord`` it writes), the clock (timed vs untimed work), the trial's whole state and its checkpoints, the
step itself (micro-batches, all-reduce over ranks), the diagnostics measured off the clock and the conformance
checks of ``optbench check-plugin``. It runs one trial; it does not know sweeps, claims or plans.

May import: the core, the store, plugins and data, parallel.
Must never import: sweep, scoring, report, recipes, commands or cli. Enforced by tests/test_layering.py.
"""
