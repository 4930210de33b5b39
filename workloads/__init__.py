"""Built-in workloads (installed as the package ``optbench_workloads``; see README, "Layout").

Each module registers through the ``optbench.workloads`` entry-point group in pyproject.toml, exactly like a
third-party plugin. Importing this package imports nothing heavy.
"""
