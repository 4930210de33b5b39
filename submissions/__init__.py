"""Built-in submissions (installed as the package ``optbench_submissions``; see README, "Layout").

Each module registers through the ``optbench.submissions`` entry-point group in pyproject.toml, exactly like a
third-party plugin. Importing this package imports nothing heavy.
"""
