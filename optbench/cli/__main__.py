"""``python -m optbench.cli``: the same command line as the installed ``optbench``."""

from optbench.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
