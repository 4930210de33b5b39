"""Provenance put on every result: versions, device, code identity. No host or user names (results get shared)."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import optbench

ENGINE_DIR = Path(optbench.__file__).resolve().parent
PROJECT_DIR = ENGINE_DIR.parent


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """What produced a result.

    Attributes:
      optbench_version: the engine's version.
      code_hash: sha256 (first 16 hex) of the engine's Python sources: identifies the code without git.
      git_commit: the project's commit when run from a git checkout ("" otherwise); ``+dirty`` when modified.
      torch_version, python_version: interpreter and framework.
      device: ``cpu`` or ``cuda`` ...; device_name: GPU model, or the CPU model on CPU; cpu_model: the CPU model.
    """

    optbench_version: str
    code_hash: str
    git_commit: str
    torch_version: str
    python_version: str
    device: str
    device_name: str
    cpu_model: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 over the engine's sources (sorted by path), first 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(ENGINE_DIR.rglob("*.py")):
        h.update(path.relative_to(ENGINE_DIR).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the project's git checkout, with ``+dirty`` if tracked files changed; "" outside a checkout."""
    if not (PROJECT_DIR / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The model of ``device``: the GPU's name on CUDA, else the CPU's."""
    import torch

    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()


def collect(device: str) -> Provenance:
    """Provenance of a trial run on ``device``."""
    import torch

    dev = torch.device(device)
    name = device_name(device)
    return Provenance(
        optbench_version=optbench.__version__, code_hash=code_hash(), git_commit=git_commit(),
        torch_version=torch.__version__, python_version=platform.python_version(), device=str(dev),
        device_name=name, cpu_model=cpu_model(),
    )
