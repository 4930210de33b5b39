"""The machine's load during a trial, recorded on its result so that a time can be read against the conditions it
was measured under (a loaded machine makes every time longer; steps do not change).

:class:`LoadMeter` spans a trial (set-up, training and evaluations; the runner enters it around the loop; for a
resumed trial, the run that finished it) and gives a :class:`Load`:

* ``load_average``: the mean of the 1-minute load average (runnable processes, this one included) sampled at the
  start, every :data:`SAMPLE_SECONDS` and at the end; None where the platform has none.
* ``cpu_count``: the CPUs this process may run on (:func:`optbench.parallel.executors.cores`).
* ``cpu_share``: the CPU time of the thread that runs the trial (user + system) over the trial's wall time, in
  [0, 1]: about 1 when it ran all along, lower when it waited, for a CPU (another job on the machine) or for
  anything else (I/O, a GPU it synchronises with by blocking). One thread rather than the process, because a
  process's CPU time over "wall time x threads" mixes in torch's intra-op workers, which spin or sleep between
  parallel regions depending on the build; the thread that drives the trial is where every wait shows.
* ``gpu_utilization``: on CUDA with NVML (``pynvml``), the mean percentage of time the GPU ran a kernel (any
  process's), sampled every :data:`SAMPLE_SECONDS`; None otherwise, never an error.

Measuring is off the trial's clock and never touches the device: the samples come from ``/proc`` and NVML in a
daemon thread that sleeps between them, so no CUDA synchronisation is added to the steady state.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from optbench.parallel.executors import cores

SAMPLE_SECONDS = 1.0  # between samples of the load average and the GPU's utilisation


@dataclass(frozen=True, kw_only=True)
class Load:
    """The machine's load over one trial (see the module docstring); every field None where it cannot be read."""

    load_average: float | None
    cpu_count: int | None
    cpu_share: float | None
    gpu_utilization: float | None

    def as_fields(self) -> dict[str, Any]:
        """The record fields of the same names."""
        return asdict(self)


def load_average() -> float | None:
    """The 1-minute load average now (None where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def gpu_reader(device: str) -> Callable[[], float] | None:
    """A function reading ``device``'s utilisation in percent through NVML, or None: not CUDA, no ``pynvml``, or a
    first reading that fails (the probe is the only call that may find out; every later failure stops sampling)."""
    if not device.startswith("cuda"):
        return None
    import torch

    def read() -> float:
        return float(torch.cuda.utilization(torch.device(device)))

    try:
        read()
    except Exception:  # ModuleNotFoundError without pynvml; NVML errors on unsupported GPUs or drivers
        return None
    return read


class LoadMeter:
    """A context manager measuring the machine's load while it is entered; :attr:`result` once it has exited.
    Enter and exit it on the thread that runs the trial (its CPU time is the share's numerator)."""

    def __init__(self, *, gpu: Callable[[], float] | None = None, period: float = SAMPLE_SECONDS) -> None:
        self.cpus = cores()
        self.gpu, self.period = gpu, period
        self.result: Load | None = None
        self._loads: list[float] = []
        self._gpu: list[float] = []
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._wall = self._cpu = 0.0

    @classmethod
    def for_trial(cls, device: str) -> LoadMeter:
        """The meter of a trial on ``device`` (a resolved device name: ``cpu``, ``cuda:0``...)."""
        return cls(gpu=gpu_reader(device))

    def _sample(self, *, gpu: bool = True) -> None:
        load = load_average()
        if load is not None:
            self._loads.append(load)
        if gpu and self.gpu is not None:
            try:
                self._gpu.append(self.gpu())
            except Exception:  # the driver went away mid-trial: keep what was sampled, stop asking
                self.gpu = None

    def _run(self) -> None:
        while not self._done.wait(self.period):
            self._sample()

    def __enter__(self) -> LoadMeter:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        self._sample(gpu=False)  # the GPU is idle before set-up: its utilisation is sampled while the trial runs
        self._thread = threading.Thread(target=self._run, name="optbench-load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(gpu=not self._gpu)  # a trial shorter than one period still gets a reading
        wall, cpu = time.perf_counter() - self._wall, time.thread_time() - self._cpu
        self.result = Load(
            load_average=sum(self._loads) / len(self._loads) if self._loads else None, cpu_count=self.cpus,
            cpu_share=min(1.0, cpu / wall) if wall > 0 else None,
            gpu_utilization=sum(self._gpu) / len(self._gpu) if self._gpu else None)
