"""Layer 3, parallel: where and on how many processes work runs, knowing nothing of what the work is.

Owns torchrun data parallelism (:mod:`~optbench.parallel.distributed`: the world of ranks, the process group whose
collectives never hang on a dead peer), starting torchrun (:mod:`~optbench.parallel.launch`) and the executors of a
sweep's jobs (:mod:`~optbench.parallel.executors`: ``Inline``, ``Pool`` of spawned workers, ``Submitit`` for SLURM
job arrays or local processes). A job is a JSON mapping and its function is named by import path
(``package.module:function``), so a job crosses processes without pickled objects and the executors never import
the sweep engine that hands them its function.

May import: the core, the store, plugins and data.
Must never import: engine, sweep, scoring, report, recipes, commands or cli. Enforced by tests/test_layering.py.
"""
