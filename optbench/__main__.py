"""``python -m optbench ...`` is the ``optbench`` command (what ``torchrun -m optbench run ...`` starts per rank)."""

from optbench.cli import main

main()
