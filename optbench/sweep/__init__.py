"""Layer 5, sweep: the one sweep engine; every command that runs trials hands it a plan.

Owns plans (:mod:`~optbench.sweep.engine`: ``Planned`` trials of plain values, ``Execution`` = jobs / nproc /
cluster, :func:`~optbench.sweep.engine.run_plan` preparing every trial before any trains, recording the plan under
``.plans/``, skipping what is recorded, handing the rest to an executor; :func:`~optbench.sweep.engine.run_job`
claiming and training one trial in whatever process runs it), claims (:mod:`~optbench.sweep.claims`:
``.claims/``, each trial trained once by any number of processes), the tuning planner (:mod:`~optbench.sweep.tuning`:
AlgoPerf's external and self-tuning studies, scrambled Halton points) and ``optbench status``
(:mod:`~optbench.sweep.status`). Progress goes to the caller's reporter.

May import: the core, the store, plugins and data, parallel, engine.
Must never import: scoring (its peer at layer 5), report, recipes, commands or cli. Enforced by
tests/test_layering.py.
"""
