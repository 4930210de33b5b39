"""Layer 8, commands: what each CLI command does, as plain functions; the one command layer.

The click layer (:mod:`optbench.cli`) only parses options and calls these: :mod:`~optbench.commands.trials` (``run``,
``tune``), :mod:`~optbench.commands.research` (the recipes), :mod:`~optbench.commands.results` (``score``, ``report``,
``import algoperf``) and :mod:`~optbench.commands.plugins` (``list``, ``check-plugin``). Each takes the parsed values, does the
work through the library (a plan for the sweep engine, scoring and report over the store, a recipe) and prints
through :mod:`optbench.console`; bad input raises :class:`optbench.errors.UsageError`, which the CLI turns into
one line and exit code 2.

May import: every layer below (core up to recipes).
Must never import: :mod:`optbench.cli`, nor click. Enforced by tests/test_layering.py (see docs/ARCHITECTURE.md).
"""
