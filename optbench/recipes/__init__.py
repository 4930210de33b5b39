"""Layer 7, recipes: research recipes, each one planner plus its analysis.

A recipe (critical batch size, learning-rate sweep, schedule-shape search, curvature, Seesaw, schedules) plans
ordinary trials (``Planned``, tagged with its coordinates) for the one sweep engine
(:func:`optbench.sweep.engine.run_plan`), then reads its analysis from their recorded results: tables, plots and
the report sections it contributes (:mod:`~optbench.recipes.sections`). A finished recipe run again trains nothing
and prints the same tables; its trials are in the store like any other, so ``score`` and ``report`` see them. Its
outputs go under ``<results>/recipes/<recipe>/``.

May import: every layer below (core, store, plugins, data, parallel, engine, sweep, scoring, report).
Must never import: commands or cli (no click, no option parsing). Enforced by tests/test_layering.py.
"""
