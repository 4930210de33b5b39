"""Layer 5, scoring: numbers from recorded results; pure functions on the store's tables.

Owns time to target, AlgoPerf's aggregation (best trial per study, median over studies), performance profiles and
the benchmark score (:mod:`~optbench.scoring.profiles`), the statistics (:mod:`~optbench.scoring.stats`: bootstrap
intervals, paired seed tests, seeds needed, hyperparameter sensitivity) and the import of AlgoPerf's logs into the
store (:mod:`~optbench.scoring.algoperf_import`, its only writer). No I/O elsewhere, no printing, no plotting;
randomness only from a seed passed in.

May import: the core and the store (the lower layers are allowed, but scoring needs nothing that trains).
Must never import: sweep (its peer at layer 5), report, recipes, commands or cli. Enforced by
tests/test_layering.py.
"""
