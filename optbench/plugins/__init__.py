"""Layer 2, plugins (with :mod:`optbench.data`): finding, loading and shaping workloads and submissions.

Owns the registry (entry points, ``module:Attr`` and ``file.py:Attr`` specs, API checks on load, each plugin's
:class:`~optbench.plugins.registry.Origin`), hyperparameters (``--opt-arg`` parsing, merging with defaults, AlgoPerf
search spaces: :mod:`~optbench.plugins.hparams`) and the submission wrappers plugins and recipes build on
(:mod:`~optbench.plugins.wrapping`, :mod:`~optbench.plugins.seesaw`, :mod:`~optbench.plugins.averaging`, the named
variants of :mod:`~optbench.plugins.variants`), parameter roles (:mod:`~optbench.plugins.roles`) and a plain class's
parameter groups by role (:mod:`~optbench.plugins.groups`), plain ``torch.optim.Optimizer`` classes as submissions
with their detected capabilities and checked values (:mod:`~optbench.plugins.plain`, :mod:`~optbench.plugins.values`),
AlgoPerf submission files run unchanged (:mod:`optbench.plugins.algoperf`: the adapter, the workload view, the
stand-in ``algoperf`` and ``absl`` packages) and the device-memory plan of a model size
(:mod:`~optbench.plugins.memory`). The built-in plugins (``optbench_workloads``,
``optbench_submissions``) may import this package, the core, :mod:`optbench.data` and the store, nothing else.

May import: the core, the store and :mod:`optbench.data`.
Must never import: parallel, engine, sweep, scoring, report, recipes, commands or cli; nor a built-in plugin by
name (they are found through entry points like any third-party one). Enforced by tests/test_layering.py.
"""
