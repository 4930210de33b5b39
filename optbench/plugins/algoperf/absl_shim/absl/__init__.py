"""optbench's stand-in for ``absl`` (only ``absl.logging``), used when absl-py is not installed: AlgoPerf
submission files import it for logging. Installing absl-py (``pip install absl-py``) replaces it."""

OPTBENCH_SHIM = True
