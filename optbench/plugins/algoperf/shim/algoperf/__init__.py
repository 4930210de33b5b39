"""optbench's stand-in for the ``algoperf`` package: only what PyTorch submission files import.

It is put on ``sys.path`` by :mod:`optbench.plugins.algoperf.imports` only when no real ``algoperf`` is installed,
so that a submission written for AlgoPerf runs here without JAX or TensorFlow. It holds the submission API's types
and enums (:mod:`algoperf.spec`), the PyTorch helpers submissions call at import (:mod:`algoperf.pytorch_utils`)
and AlgoPerf's NumPy random keys (:mod:`algoperf.random_utils`). Written from AlgoPerf's published ``spec.py``
signatures; the enum values are AlgoPerf's, since submissions compare them.
"""

OPTBENCH_SHIM = True  # tells a test (and a curious user) that this is the stand-in, not the real package
