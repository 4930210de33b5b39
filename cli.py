"""Run the optbench CLI from a checkout: ``python cli.py run --workload linreg --opt adamw``.

A shim only: the click app lives in the engine (``optbench.cli``), which is what the installed ``optbench`` command
runs. In a wheel this file is not installed, so no package claims the top-level name ``cli``.
"""

from optbench.cli import main

if __name__ == "__main__":
    main()
