"""Layer 1, store: what a run leaves on disk, and the file helpers every layer shares.

Owns the results store (one Parquet file per trial under ``<results>/<workload>-<size>/<submission>/``, written
atomically; readers that take the trial table from footers alone, in bulk, cached under ``.optbench-cache/``, and
that list foreign or damaged files as problems instead of failing), atomic writes and path checks
(:mod:`~optbench.store.fsutil`), default locations (:mod:`~optbench.store.paths`) and the provenance stamped on
every result (:mod:`~optbench.store.provenance`). torch, pandas and pyarrow load inside the functions.

May import: the core (``optbench``, ``api``, ``errors``, ``schedules``, ``console``, ``options``) only.
Must never import: plugins, data, parallel, engine, sweep, scoring, report, recipes, commands or cli; what to write
is handed in as plain records. Enforced by tests/test_layering.py (see docs/ARCHITECTURE.md).
"""
