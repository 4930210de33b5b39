"""Data parallelism over the processes ``torchrun`` starts: one trial, N ranks, one global batch.

Each rank draws the *whole* global batch from the trial's generator (every rank holds the same generator state, so
they draw the same batch), keeps its own contiguous part (:func:`part`) and back-propagates it; the harness then sums
the gradients over ranks (:meth:`Group.all_reduce`) before ``updater.step()``. Each rank's loss is weighted by its
share of the global batch's tokens, so the summed gradient *is* the single-process gradient of the global batch,
whatever the world size and however unevenly the batch divides.

Why not ``DistributedDataParallel``: DDP waits for its gradient buckets inside the autograd engine, where a rank
blocked on a dead peer cannot be woken before the process group's timeout (tens of minutes). Here every collective
is launched asynchronously and waited on by :meth:`Group.wait`, which (gloo) polls the work and the peers' failure
flag in the rendezvous store, or (NCCL) only orders the streams (no host stall). A rank that raises posts its
outcome to the store (:meth:`Group.fail`); the others raise :class:`PeerFailed`, and rank 0 records the trial with
the failing rank's outcome and reason. A process group with an abandoned collective cannot be reused, so the command
then ends (:attr:`Group.broken`). The cost: gradients are reduced after the backward pass rather than overlapped with
it (DDP's bucketing), which matters on many GPUs with slow links and not on one node's NVLink.

Where a failure is seen, on NCCL. The host runs ahead of the GPU and never waits for it inside a stretch, so a
collective whose peer died does not stop the host: it blocks the GPU's stream, and the host keeps queueing work
behind it. The check is therefore on the host, out of band: every micro-batch starts with :meth:`Group.check_peers`,
one round trip to the rendezvous store (about 20 us on one node; no device work, no synchronisation), so a rank
whose peer failed at step k raises :class:`PeerFailed` at its next micro-batch, within a step or two, not at the
stretch end. (An all-reduce of a failure flag would not do: it is one more collective the dead peer never joins.)
One case the host check cannot reach: if the host has queued so much work behind the hung collective that the
launch queue is full (a large model's micro-batch is about a thousand kernels, near the queue's depth), it blocks
inside a kernel launch, where no Python runs. The backstop for that is the NCCL collective timeout
(:data:`COLLECTIVE_TIMEOUT`, minutes instead of torch's ten or our former thirty) with asynchronous error handling
in its clean-up-only mode (``TORCH_NCCL_ASYNC_ERROR_HANDLING=2`` unless set): the watchdog aborts the communicator,
the hung kernel returns, the host runs again, sees the flag and records; the failed rank waits that long for rank 0
to record (:meth:`Group.finished_recording`) before it exits and the launcher tears the group down. On gloo the
waits poll the store as well, so a failure is seen inside the collective that waits for the dead peer.

Not under torchrun (no ``WORLD_SIZE`` above 1 in the environment), :func:`world` is one rank and nothing here is
used: the single-process path has no collectives at all.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from optbench.errors import UsageError

# Backstop only (failures are seen through the store at the next micro-batch): a collective still pending after
# this long fails. Long enough for the legitimate skew between ranks (rank 0 writing a checkpoint, one rank loading
# its data or compiling more slowly), short enough that a host blocked behind a dead peer's collective records the
# trial within minutes.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
RECORD_WAIT = 60.0  # seconds a failed rank waits for rank 0 to record the trial (NCCL: plus COLLECTIVE_TIMEOUT)
_POLL_START, _POLL_MAX = 5e-5, 2e-3  # seconds between polls of a pending collective (exponential back-off)


@dataclass(frozen=True, kw_only=True)
class World:
    """This process's place among the trial's processes (from torchrun's environment).

    Attributes:
      rank: 0 .. size - 1; rank 0 writes results and checkpoints.
      size: number of processes training the trial.
      local_rank: index on this node (the GPU this rank uses).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def world() -> World:
    """The world this process belongs to, read from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun's)."""
    size = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UsageError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local}")
    return World(rank=rank, size=size, local_rank=local)


def part(n: int, w: World) -> tuple[int, int]:
    """``[start, stop)`` of rank ``w.rank``'s share of ``n`` examples: contiguous, sizes differing by at most one,
    the first ``n % size`` ranks taking one more; their union over ranks is ``[0, n)``."""
    base, extra = divmod(n, w.size)
    start = w.rank * base + min(w.rank, extra)
    return start, start + base + (1 if w.rank < extra else 0)


class PeerFailed(BaseException):
    """Raised on a rank whose peer ended the trial; carries the peer's outcome and reason.

    A BaseException, so that no plugin code catching ``Exception`` can swallow it.
    """

    def __init__(self, rank: int, outcome: str, reason: str | None) -> None:
        super().__init__(f"rank {rank} ended the trial: {outcome}")
        self.rank, self.outcome, self.reason = rank, outcome, reason


class Group:
    """The collectives of one trial over the default process group, each waited on without hanging on a dead peer.

    Args:
      w: this process's world (size > 1).
      device: the trial's device; CUDA uses NCCL, anything else gloo.
      trial_index: the trial's number within this command: names its failure flag in the store.
    """

    broken = False  # class-wide: once a collective was abandoned, no later trial of this process may use the group

    def __init__(self, w: World, device: torch.device, *, trial_index: int) -> None:
        import torch.distributed as dist

        self.world, self.device = w, device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            if self.backend == "nccl":  # on a timeout, abort the communicators but keep the process: rank 0 records
                os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
            dist.init_process_group(backend=self.backend, timeout=COLLECTIVE_TIMEOUT)
        elif dist.get_backend() != self.backend:
            raise UsageError(f"this process group uses {dist.get_backend()}; a trial on {device} needs "
                             f"{self.backend}: run one device type per torchrun")
        self.dist = dist
        self.store = dist.distributed_c10d._get_default_store()
        self.key = f"optbench/trial{trial_index}/failed"
        self.names = self.device_names()  # recorded on the result

    # ----- failures -----------------------------------------------------------------------------------------
    def fail(self, outcome: str, reason: str | None) -> None:
        """Tell the peers this rank ended the trial (they raise :class:`PeerFailed` at their next wait)."""
        Group.broken = True
        try:
            self.store.set(self.key, json.dumps({"rank": self.world.rank, "outcome": outcome, "reason": reason}))
        except Exception:  # the store is gone (the launcher is tearing down): nothing left to tell
            pass

    def check_peers(self) -> None:
        """Raise :class:`PeerFailed` if a peer has posted its failure (one store round trip; no device work)."""
        if self.store.check([self.key]):
            Group.broken = True
            msg = json.loads(self.store.get(self.key))
            raise PeerFailed(int(msg["rank"]), str(msg["outcome"]), msg.get("reason"))

    def finished_recording(self, *, wait: bool, seconds: float | None = None) -> None:
        """After a failure: rank 0 says it has written the result (``wait=False``); the other ranks wait for that
        (at most ``seconds``: by default :data:`RECORD_WAIT`, plus the collective timeout on NCCL, after which a rank
        0 blocked behind the failed collective runs again) before exiting, so that the launcher's teardown cannot
        kill rank 0 mid-write."""
        if seconds is None:
            seconds = RECORD_WAIT + (COLLECTIVE_TIMEOUT.total_seconds() if self.backend == "nccl" else 0.0)
        key = f"{self.key}/recorded"
        try:
            if not wait:
                self.store.set(key, "1")
                return
            end = time.monotonic() + seconds
            while not self.store.check([key]) and time.monotonic() < end:
                time.sleep(0.01)
        except Exception:  # the store is gone: rank 0 has exited, nothing to wait for
            pass

    # ----- waiting ------------------------------------------------------------------------------------------
    def wait(self, work: Any) -> None:
        """Wait for an asynchronous collective. NCCL: order the current stream after it (no host stall). Gloo:
        poll it, and the peers' failure flag, with back-off (the host would block on gloo anyway)."""
        if self.backend == "nccl":
            work.wait()
            return
        pause = _POLL_START
        while not work.is_completed():
            self.check_peers()
            time.sleep(pause)
            pause = min(2 * pause, _POLL_MAX)
        work.wait()  # completed: returns at once, raises if the collective failed

    def sync(self) -> None:
        """Wait until this rank's queued device work is done, watching for failed peers meanwhile (a rank stuck
        in a collective with a dead peer would otherwise never return from ``torch.cuda.synchronize``)."""
        if self.device.type != "cuda":
            self.check_peers()
            return
        event = torch.cuda.Event()
        event.record()
        pause = _POLL_START
        while not event.query():
            self.check_peers()
            time.sleep(pause)
            pause = min(2 * pause, _POLL_MAX)

    # ----- collectives --------------------------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, *, op: str = "sum") -> torch.Tensor:
        """In-place all-reduce (``sum`` or ``max``) of ``tensor`` over the ranks; returns it."""
        ops = {"sum": self.dist.ReduceOp.SUM, "max": self.dist.ReduceOp.MAX}
        self.wait(self.dist.all_reduce(tensor, op=ops[op], async_op=True))
        return tensor

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0) -> torch.Tensor:
        """In-place broadcast of rank ``src``'s ``tensor``; returns it."""
        self.wait(self.dist.broadcast(tensor, src=src, async_op=True))
        return tensor

    def all_reduce_grads(self, params: list[torch.Tensor], *, bucket_bytes: int = 64 << 20) -> None:
        """Sum the ``.grad`` of ``params`` over the ranks, in flat buckets of about ``bucket_bytes`` (one
        collective each, all in flight together). A parameter without a gradient on this rank counts as zero,
        so every rank launches the same collectives."""
        buckets: list[list[torch.Tensor]] = [[]]
        size = 0
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if buckets[-1] and (size + p.grad.numel() * p.grad.element_size() > bucket_bytes
                                or p.grad.dtype != buckets[-1][0].grad.dtype):
                buckets.append([])
                size = 0
            buckets[-1].append(p)
            size += p.grad.numel() * p.grad.element_size()
        pending = []
        for bucket in buckets:
            if not bucket:
                continue
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])  # (sum of numels,)
            pending.append((bucket, flat, self.dist.all_reduce(flat, async_op=True)))
        for bucket, flat, work in pending:
            self.wait(work)
            offset = 0
            for p in bucket:
                n = p.grad.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n

    def agree_max(self, value: float) -> float:
        """The largest of the ranks' ``value`` (float64), known to every rank."""
        t = torch.tensor([value], dtype=torch.float64, device=self.comm_device)
        return self.to_host(self.all_reduce(t, op="max"))[0]

    def to_host(self, tensor: torch.Tensor) -> list[float]:
        """``tensor``'s values on the host. With NCCL the collective that produced it may still be queued: wait
        through :meth:`sync` (which watches the peers) rather than in ``tolist``, which would block for ever on a
        collective a dead peer never joins."""
        self.sync()
        return tensor.tolist()

    @property
    def comm_device(self) -> torch.device:
        """Where the backend reduces: the GPU for NCCL, host memory for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def reduce_values(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``values`` (any shape), as float64 on :attr:`comm_device`."""
        return self.all_reduce(values.to(device=self.comm_device, dtype=torch.float64))

    def device_names(self) -> str:
        """Every rank's device name, comma-separated in rank order (one string all-gathered through the store)."""
        from optbench.store.provenance import device_name

        mine = device_name(str(self.device))
        self.store.set(f"{self.key}/device{self.world.rank}", mine)
        names = []
        for r in range(self.world.size):
            self.store.wait([f"{self.key}/device{r}"])
            names.append(self.store.get(f"{self.key}/device{r}").decode())
        return ",".join(names)


def finish() -> None:
    """End the process group at the end of a command (no-op outside torchrun or after a failure)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        return
    if dist.is_available() and dist.is_initialized() and not Group.broken:
        dist.destroy_process_group()


def leave(code: int) -> None:
    """End this process's part in torchrun's process group, if it joined one. After a rank failed, the group holds an
    abandoned collective whose teardown could block: then leave at once with ``code`` (the trial is recorded)."""
    import os
    import sys

    if "torch.distributed" not in sys.modules:
        return
    if Group.broken:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    finish()
