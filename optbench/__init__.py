"""optbench: time-to-target benchmarks for deep-learning training algorithms.

Importing this package is cheap on purpose: torch, pandas and pyarrow are imported inside the functions that need
them, so ``optbench --help`` answers instantly.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # of the Parquet results; bump on any incompatible change (see README, "Results")
READABLE_SCHEMA_VERSIONS = (1, 2)  # 2 added resumes and lost_seconds; version-1 files read with their defaults
