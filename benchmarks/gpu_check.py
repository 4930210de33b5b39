"""One prepared GPU check: every GPU promise of optbench, measured in one call of under 8 minutes on one H200.

    python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .   # over the device's own torch
    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py $OUT/gpu             # on the GPU (default --budget 420 s)
    python benchmarks/gpu_check.py --cpu /tmp/gpu-check                    # the same logic on the CPU, in seconds

Writes ``OUT/gpu_check.json`` (every section: status, seconds, figures, error), ``OUT/gpu_check.md`` (the same as
a table) and ``OUT/gpu_check.jsonl`` (a line per section as it ends, so a killed run still leaves its earlier
results). Exits 1 when a promise failed (a section's status ``fail``), else 0.

Sections, most valuable first (docs/PERFORMANCE.md, "GPU check", says what each measures and promises):
  sync_audit      (a) no host synchronisation between stretch ends: LM small, CIFAR-10 small, linreg
  harness         (b) the optbench trial loop against a bare PyTorch loop, LM small, bf16: steps/s ratio >= 0.98
  optimizer_cost  (c) SOAP, Shampoo, Muon, AdamW whole-step ms on LM small and on the paper-width LM at its batch
  mfu             (h) model FLOPs utilisation of LM small and GPT-2 small (paper), from (b) and (c)'s step times
  loss_memory     (d) chunked loss peak memory against the plain loss, V = 50257
  compile         (e) a --compile trial trains; its compile_seconds and recompiles as recorded
  resume          (g) a checkpointed trial killed and resumed against the uninterrupted one (and --deterministic)
  nccl            (f) a world-size-1 NCCL group under torchrun (collectives), and a trial run under torchrun

Each section runs under its own time limit and try/except: a failure is recorded and the next section runs. When
the global ``--budget`` (seconds) is spent, the remaining sections are skipped. ``--cpu``: tiny sizes and step
counts, the sync audit by counting host reads (tests/test_zero_sync.py's ``host_reads``) instead of CUDA's sync
debug mode, gloo instead of NCCL, memory sections skipped; no promise about speed is checked there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100/H200 SXM (NVIDIA's datasheet; 1979 with 2:4 sparsity), as
# optbench.engine.flops.PEAK_TFLOPS["H200"]
HARNESS_GOAL = 0.98  # optbench trial loop steps/s over the bare loop's
LOSS_MEMORY_GOAL = 0.25  # chunked/plain peak-memory ratio at most this (the review expects about 0.1)
RESUME_RTOL = 1e-2  # non-deterministic CUDA: final validation loss of the resumed trial within 1% of the uninterrupted
OPTIMIZERS = ("adamw", "soap", "shampoo", "muon")


class SectionTimeout(Exception):
    """A section ran past its own time limit."""


class Skip(Exception):
    """A section that cannot run here (the reason is recorded, status ``skipped``)."""


class PromiseFailed(AssertionError):
    """A section ran and a promise did not hold (status ``fail``)."""


@dataclasses.dataclass
class Ctx:
    """What every section sees."""

    cpu: bool
    device: torch.device
    out: Path
    work: Path  # scratch folder (data, results)
    figures: dict[str, dict[str, Any]]  # earlier sections' figures, by section name
    sync_mode: str = "error"
    partial: dict[str, Any] = dataclasses.field(default_factory=dict)  # figures so far of the running section

    @property
    def lm_size(self) -> str:
        return "tiny" if self.cpu else "small"

    def data_dir(self) -> Path:
        """A synthetic LM corpus in the prepared format (made once)."""
        root = self.work / "data"
        if not (root / "wikitext103").exists():
            from optbench.data.synthetic import write_synthetic

            write_synthetic(root, n_tokens=400_000 if self.cpu else 1_500_000)  # small's validation needs 512 x 257 tokens
        return root

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ------------------------------------------------------------------------------------------------ building loops

LM_CPU_VOCAB = 512  # --cpu: the tiny LM with a small vocabulary (as the tests run it)


def lm_loop(ctx: Ctx, submission: str, size: str, **cfg: Any) -> Any:
    """A TrialLoop of wikitext ``size`` on synthetic resident tokens (no data directory), on ctx.device."""
    from optbench.engine.loop import TrialLoop
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload
    from optbench_workloads.lm import LMTask

    prep = prepare(load_workload("wikitext"), load_submission(submission),
                   TrialConfig(size=size, device=str(ctx.device), sync_every=10**6, max_steps=10**6,
                               eval_every_steps=10**9, **cfg), results_dir=ctx.work)
    if ctx.cpu:
        prep = dataclasses.replace(prep, size=dataclasses.replace(
            prep.size, options={**prep.size.options, "vocab": LM_CPU_VOCAB}))
    vocab = int(prep.size.options["vocab"])
    n = 200_000 if ctx.cpu else 4_000_000
    tokens = np.random.default_rng(0).integers(0, vocab, n, dtype=np.int64)
    task = LMTask(prep.size, ctx.device, train=tokens[: n * 9 // 10], val=tokens[n * 9 // 10:], vocab_size=vocab)
    return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())


def cifar_loop(ctx: Ctx, submission: str) -> Any:
    """A TrialLoop of cifar10 (small; --cpu: tiny, narrowed) on random images held on the device."""
    from optbench.engine.loop import TrialLoop
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload
    from optbench_workloads.cifar10 import CifarTask

    size = "tiny" if ctx.cpu else "small"
    prep = prepare(load_workload("cifar10"), load_submission(submission),
                   TrialConfig(size=size, device=str(ctx.device), sync_every=10**6, max_steps=10**6,
                               eval_every_steps=10**9, **({"batch_size": 8} if ctx.cpu else {})),
                   results_dir=ctx.work)
    if ctx.cpu:
        prep = dataclasses.replace(prep, size=dataclasses.replace(
            prep.size, options={**prep.size.options, "widths": (8, 8, 16, 16), "train_examples": None,
                                "val_examples": None}))
    rng = np.random.default_rng(0)
    n_train, n_val = (64, 16) if ctx.cpu else (50_000, 10_000)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train, dtype=np.int64),
              "val_x": rng.integers(0, 256, (n_val, 32, 32, 3), dtype=np.uint8),
              "val_y": rng.integers(0, 10, n_val, dtype=np.int64)}
    task = CifarTask(prep.size, ctx.device, arrays)
    return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())


def linreg_loop(ctx: Ctx, submission: str) -> Any:
    from optbench.engine.loop import TrialLoop
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload

    prep = prepare(load_workload("linreg"), load_submission(submission),
                   TrialConfig(size="tiny" if ctx.cpu else "small", device=str(ctx.device), sync_every=10**6,
                               max_steps=10**6, eval_every_steps=10**9), results_dir=ctx.work)
    task = prep.workload.obj.setup(prep.size, device=ctx.device, data_dir=None)
    return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())


# ------------------------------------------------------------------------------------------------ (a) sync audit

def steady_syncs(ctx: Ctx, loop: Any, warm: int, counted: int, *, plant: bool = False) -> list[str]:
    """The synchronising calls inside ``counted`` steady-state steps (after ``warm`` set-up steps), one stretch,
    no loss read: on CUDA what ``torch.cuda.set_sync_debug_mode`` reports (in "error" mode the first raises and
    ends the count); on the CPU the host reads tests/test_zero_sync.py counts. ``plant``: each counted step also
    reads a parameter's sum with ``.item()`` (the control: the audit must see it)."""
    loop.state.clock.run()
    for _ in range(warm):
        loop.step()
    ctx.sync()
    if plant:
        step, first = loop.step, next(iter(loop.state.model.parameters()))

        def planted() -> Any:
            first.detach().sum().item()
            return step()

        loop.step = planted
    if ctx.device.type != "cuda":
        from tests.test_zero_sync import host_counters, host_reads

        with host_reads() as mode:
            mode.exempt = host_counters(loop.state.updater)
            for i in range(counted):
                mode.step = i
                loop.step()
            mode.step = None
        return [f"{r.op} at {r.where}" for r in mode.reads]
    import warnings

    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(ctx.sync_mode)
        try:
            for _ in range(counted):
                loop.step()
        except RuntimeError as e:
            if "synchroniz" not in str(e):
                raise
            found.append(f"{str(e)[:200]} at {_outside_torch(e)}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found += [str(w.message)[:200] for w in caught if "synchroniz" in str(w.message)]
    assert found or len(loop.pending) >= counted, "a stretch ended inside the counted steps"
    return found


def _outside_torch(e: BaseException) -> str:
    """file:line of the innermost frame of the traceback outside torch: the code that synchronised."""
    where = "?"
    for frame in traceback.extract_tb(e.__traceback__):
        if "/torch/" not in frame.filename.replace("\\", "/"):
            where = f"{'/'.join(frame.filename.split('/')[-2:])}:{frame.lineno}"
    return where


def sec_sync_audit(ctx: Ctx) -> dict[str, Any]:
    warm, counted = (2, 3) if ctx.cpu else (3, 20)
    cases: list[tuple[str, Callable[[], Any]]] = [
        (f"wikitext {ctx.lm_size} x adamw", lambda: lm_loop(ctx, "adamw", ctx.lm_size)),
        (f"wikitext {ctx.lm_size} x muon", lambda: lm_loop(ctx, "muon", ctx.lm_size)),
        (f"wikitext {ctx.lm_size} x soap", lambda: lm_loop(ctx, "soap", ctx.lm_size)),
        (f"cifar10 {'tiny' if ctx.cpu else 'small'} x adamw", lambda: cifar_loop(ctx, "adamw")),
        (f"linreg {'tiny' if ctx.cpu else 'small'} x adamw", lambda: linreg_loop(ctx, "adamw")),
    ]
    counts: dict[str, int] = ctx.partial.setdefault("syncs", {})  # kept if the section is cut short
    first: dict[str, list[str]] = ctx.partial.setdefault("first", {})
    control = len(steady_syncs(ctx, linreg_loop(ctx, "adamw"), warm, counted, plant=True))
    if control == 0:
        raise PromiseFailed("the audit is blind: a planted .item() in every step was not seen", {"control": 0})
    for name, build in cases:
        found = steady_syncs(ctx, build(), warm, counted)
        counts[name] = len(found)
        if found:
            first[name] = sorted(set(found))[:3]
    fig = {"method": "host reads (TorchDispatchMode)" if ctx.cpu else f"set_sync_debug_mode({ctx.sync_mode!r})",
           "steps_counted": counted, "syncs": counts, "first": first,
           "control": f"{control} seen of a planted .item() per step (linreg x adamw)"}
    if any(counts.values()):
        raise PromiseFailed(f"synchronising calls inside steady-state steps: {counts}; first: {first}", fig)
    return fig


# ------------------------------------------------------------------------------------------------ (b) harness

def sec_harness(ctx: Ctx) -> dict[str, Any]:
    from benchmarks import gpu_step

    steps, repeats = (3, 1) if ctx.cpu else (100, 3)
    gpu_step.bare(ctx.lm_size, ctx.device, max(1, steps // 10))  # warm kernels and caches
    gpu_step.harness(ctx.lm_size, ctx.device, max(1, steps // 10), None)
    bare_rates, harness_rates, peak = [], [], 0.0
    for _ in range(repeats):
        rate, mem = gpu_step.bare(ctx.lm_size, ctx.device, steps)
        bare_rates.append(rate)
        peak = max(peak, mem)
        rate, mem = gpu_step.harness(ctx.lm_size, ctx.device, steps, None)
        harness_rates.append(rate)
        peak = max(peak, mem)
    b, h = statistics.median(bare_rates), statistics.median(harness_rates)
    fig = {"size": ctx.lm_size, "autocast": "bf16" if ctx.device.type == "cuda" else "none (CPU)",
           "steps": steps, "repeats": repeats, "bare_steps_per_s": b, "harness_steps_per_s": h, "ratio": h / b,
           "goal": HARNESS_GOAL, "peak_gib": None if ctx.cpu else peak}
    if not ctx.cpu and h / b < HARNESS_GOAL:
        raise PromiseFailed(f"harness/bare steps/s {h / b:.3f} < {HARNESS_GOAL}", fig)
    return fig


# ------------------------------------------------------------------------------------------------ (c) optimizer cost

def step_ms(ctx: Ctx, loop: Any, warm: int, timed: int) -> float:
    """Mean milliseconds of a whole step (batch, forward, backward, update), synchronised only at both ends."""
    loop.state.clock.run()
    for _ in range(warm):
        loop.step()
    ctx.sync()
    start = time.perf_counter()
    for _ in range(timed):
        loop.step()
    ctx.sync()
    return (time.perf_counter() - start) / timed * 1e3


def sec_optimizer_cost(ctx: Ctx) -> dict[str, Any]:
    # warm-up past step 11: Shampoo's first roots (step 10) and SOAP's first refresh (11) are not in the timed steps
    small_warm, small_timed = (1, 2) if ctx.cpu else (12, 20)
    paper_warm, paper_timed = (1, 2) if ctx.cpu else (11, 3)
    paper, paper_cfg = ("tiny", {"batch_size": 8, "micro_batch_size": 4}) if ctx.cpu else ("paper", {})
    small: dict[str, float] = {}
    big: dict[str, float] = {}
    fig = ctx.partial  # filled as it goes: a section cut by its time limit keeps what it measured
    fig.update({f"{ctx.lm_size}_ms": small, "paper_size": paper,
                "paper_batch": "the size's (128 x 1024 tokens, micro-batches of 32)" if not ctx.cpu else "8 (micro 4)",
                "paper_ms": big, "timing": f"{small_timed} steps after {small_warm} ({ctx.lm_size}); {paper_timed} "
                                           f"after {paper_warm} (paper); whole steps, synchronised at both ends"})
    for opt in OPTIMIZERS:
        small[opt] = step_ms(ctx, lm_loop(ctx, opt, ctx.lm_size), small_warm, small_timed)
        _free(ctx)
    for opt in OPTIMIZERS:
        big[opt] = step_ms(ctx, lm_loop(ctx, opt, paper, **paper_cfg), paper_warm, paper_timed)
        _free(ctx)
    ratio = lambda d: {k: v / d["adamw"] for k, v in d.items()}  # noqa: E731
    fig.update({f"{ctx.lm_size}_vs_adamw": ratio(small), "paper_vs_adamw": ratio(big)})
    return dict(fig)


def _free(ctx: Ctx) -> None:
    import gc

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ (h) MFU

def lm_flops_per_token(size: str) -> tuple[float, dict[str, int]]:
    """PaLM's model FLOPs per token (appendix B), 6N + 12·L·H·Q·T, as the records' MFU counts them
    (:func:`optbench_workloads._gpt.flops_per_sequence`: N the blocks' matrices and the tied head, no embedding
    lookups or norm gains; L layers, H heads, Q head dimension, T sequence length; forward and backward, no
    recomputation counted)."""
    from optbench.plugins.registry import load_workload

    workload = load_workload("wikitext").obj
    o = workload.sizes[size].options
    L, d, T, V = int(o["n_layer"]), int(o["d_model"]), int(o["seq_len"]), int(o["vocab"])  # noqa: N806
    n = L * (4 + 2 * 4) * d * d + V * d
    per_token = workload.flops_per_example(workload.sizes[size]) / T
    assert per_token == 6 * n + 12 * L * d * T, "the workload's formula is no longer PaLM's"
    return per_token, {"N": n, "L": L, "H": int(o["n_head"]), "Q": d // int(o["n_head"]), "T": T}


def sec_mfu(ctx: Ctx) -> dict[str, Any]:
    from optbench.plugins.registry import load_workload

    sizes = load_workload("wikitext").obj.sizes
    out: dict[str, Any] = {"formula": "6N + 12*L*H*Q*T FLOPs per token (PaLM)",
                           "peak_flops": H200_BF16_PEAK, "peak": "H200 dense bf16, 989 TFLOP/s"}
    harness = ctx.figures.get("harness", {})
    cost = ctx.figures.get("optimizer_cost", {})
    runs = {"small": (harness.get("harness_steps_per_s"), sizes["small"].batch_size),
            "paper": (1e3 / cost["paper_ms"]["adamw"] if cost.get("paper_size") == "paper" else None,
                      sizes["paper"].batch_size)}
    if ctx.cpu:
        runs["small"] = (None, 0)
    for size, (steps_per_s, batch) in runs.items():
        per_token, shape = lm_flops_per_token(size)
        row: dict[str, Any] = {"flops_per_token": per_token, **shape}
        if steps_per_s:
            tokens_per_s = steps_per_s * batch * shape["T"]
            row.update(tokens_per_s=tokens_per_s, mfu=tokens_per_s * per_token / H200_BF16_PEAK,
                       source="harness steps/s (b)" if size == "small" else "adamw paper step (c)")
        else:
            row["mfu"] = None
        out[size] = row
    if not any(isinstance(v, dict) and v.get("mfu") for v in out.values()) and not ctx.cpu:
        raise Skip("no step time from (b) or (c)")
    return out


# ------------------------------------------------------------------------------------------------ (d) loss memory

def sec_loss_memory(ctx: Ctx) -> dict[str, Any]:
    if ctx.cpu:
        raise Skip("memory figures need CUDA's max_memory_allocated")
    out = finish([sys.executable, str(ROOT / "benchmarks" / "loss_memory.py"), "--device", "cuda"])
    if out.returncode != 0:
        raise RuntimeError(f"loss_memory.py failed (rc {out.returncode}): {out.stderr[-2000:]}")
    peaks = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 4 and parts[1] in ("plain", "chunked"):
            peaks[parts[1]] = float(parts[2])
    fig = {"tokens": 8192, "vocab": 50257, "d_model": 768, "plain_gib": peaks["plain"],
           "chunked_gib": peaks["chunked"], "ratio": peaks["chunked"] / peaks["plain"], "goal": LOSS_MEMORY_GOAL}
    if fig["ratio"] > LOSS_MEMORY_GOAL:
        raise PromiseFailed(f"chunked/plain memory {fig['ratio']:.3f} > {LOSS_MEMORY_GOAL}", fig)
    return fig


def sec_memory_plan(ctx: Ctx) -> dict[str, Any]:
    """The ladder's memory plan against the device: GPT-2 small (``--model 124m``) with AdamW, its micro-batch as
    planned for this GPU (optbench/plugins/memory.py), the FLOPs count and two steps; the peak allocated must stay
    under the plan's estimate (the plan is conservative) and the ratio says how much room it leaves."""
    if ctx.cpu:
        raise Skip("the plan is made for CUDA memory (CPU trials are never shrunk)")
    from optbench.plugins import memory
    from optbench.plugins.registry import load_workload

    _free(ctx)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    loop = lm_loop(ctx, "adamw", "paper", model="124m")
    micro = loop.prep.micro_batch_size
    profile = load_workload("wikitext").obj.memory_profile(loop.prep.size)
    estimate = memory.peak_bytes(profile, "adamw", micro)
    ctx.partial.update(micro_batch_size=micro, batch_size=loop.prep.batch_size, estimate_gib=estimate / 2**30)
    loop.begin()
    for _ in range(2):
        loop.step()
    ctx.sync()
    peak = torch.cuda.max_memory_allocated(ctx.device)
    fig = {**ctx.partial, "peak_gib": peak / 2**30, "peak_over_estimate": peak / estimate}
    del loop
    _free(ctx)
    if peak > estimate:
        raise PromiseFailed(f"peak {peak / 2**30:.1f} GiB over the plan's {estimate / 2**30:.1f} GiB", fig)
    return fig


# ------------------------------------------------------------------------------------------------ trials via the CLI

def spawn(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[str]:
    """``cmd`` in its own process group (so that :func:`end` reaches torchrun's workers too); its output captured,
    or written to ``log`` (a process nobody reads from while it runs must not fill a pipe)."""
    sink: Any = subprocess.PIPE if log is None else log.open("w")
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=sink,
                                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE, text=True,
                                start_new_session=True)
    finally:
        if log is not None:
            sink.close()  # the child holds its own copy


def end(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s whole process group (the process and whatever it started), and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def finish(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end; on any exception here (a section's time limit) its process group is killed."""
    proc = spawn(cmd, env)
    try:
        out, err = proc.communicate()
    except BaseException:
        end(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

def cli(ctx: Ctx, results: Path, *args: str, prefix: tuple[str, ...] = ("-m", "optbench"), study: str = "check",
        max_steps: int, env: dict[str, str] | None = None, background: bool = False,
        workload: str = "wikitext") -> Any:
    """``optbench run`` of one trial (the LM at ctx.lm_size, or linreg) into ``results``; returns the finished
    process, or the running one with ``background``."""
    size = ctx.lm_size if workload == "wikitext" else ("tiny" if ctx.cpu else "small")
    cmd = [sys.executable, *prefix, "run", "-w", workload, "--size", size, "--results-dir", str(results),
           "--device", "cpu" if ctx.cpu else "cuda", "--max-steps", str(max_steps), "--step-hint", str(max_steps),
           "--eval-every", str(max_steps), "--study", study, "--quiet", *args]
    if workload == "wikitext":
        cmd += ["--data-dir", str(ctx.data_dir())]
    return spawn(cmd, env, log=results.parent / f"{results.name}-{study}.log") if background else finish(cmd, env)


def records(results: Path, study: str | None = None) -> list[dict[str, Any]]:
    """The trial records (with their last eval row's metric) under ``results``."""
    from optbench.store.reader import read_trial

    found = []
    for path in sorted(results.rglob("*.parquet")):
        meta, evals = read_trial(path)
        if study is None or meta.get("study") == study:
            found.append({**meta, "last_metric": float(evals["metric_value"].iloc[-1]) if len(evals) else None})
    return found


def one_record(results: Path, proc: Any, study: str | None = None) -> dict[str, Any]:
    found = records(results, study)
    if len(found) != 1:
        tail = (getattr(proc, "stdout", "") or "")[-1500:] + (getattr(proc, "stderr", "") or "")[-1500:]
        raise PromiseFailed(f"expected one record of study {study}, found {len(found)}; rc {proc.returncode}; "
                            f"output: {tail}")
    return found[0]


def sec_compile(ctx: Ctx) -> dict[str, Any]:
    results = ctx.work / "compile"
    steps = 3 if ctx.cpu else 60
    proc = cli(ctx, results, "--compile", max_steps=steps, workload="linreg" if ctx.cpu else "wikitext")
    rec = one_record(results, proc)
    fig = {"workload": rec["workload"], "size": rec["size"], "steps": rec["total_steps"], "outcome": rec["outcome"],
           "compiled": bool(rec.get("compiled")), "compile_seconds": rec.get("compile_seconds"),
           "recompiles": rec.get("recompiles"), "timed_seconds": rec["total_timed_seconds"],
           "last_metric": rec["last_metric"]}
    ok = (rec["outcome"] in ("reached", "missed") and fig["compiled"] and fig["compile_seconds"] is not None
          and fig["compile_seconds"] > 0 and rec["total_steps"] == steps and math.isfinite(rec["last_metric"]))
    if not ok:
        raise PromiseFailed(f"compiled trial did not train as expected: {fig}; error: {rec.get('error')}", fig)
    return fig


def killed_and_resumed(ctx: Ctx, results: Path, study: str, steps: int, extra: tuple[str, ...]) -> dict[str, Any]:
    """Run a checkpointed trial, SIGKILL it once its first checkpoint is on disk, resume it; its record."""
    ckpt_dir = results / ".checkpoints"
    args = ("--checkpoint-every", "0.2" if ctx.cpu else "1", *extra)
    workload = "linreg" if ctx.cpu else "wikitext"
    proc = cli(ctx, results, *args, study=study, max_steps=steps, background=True, workload=workload)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt_dir.exists() and any(p.is_file() and not p.name.startswith(".") and ".tmp" not in p.name
                                         for p in ckpt_dir.rglob("*")):
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            raise PromiseFailed(f"{study}: the trial ended (rc {proc.returncode}) before a checkpoint could be "
                                f"interrupted: {(results.parent / f'{results.name}-{study}.log').read_text()[-1500:]}")
        time.sleep(0.3)  # let the checkpoint's write finish (it is atomic: a rename)
    finally:  # killed here also when the section times out
        end(proc)
    if records(results, study):
        raise PromiseFailed(f"{study}: the trial finished before the kill")
    again = cli(ctx, results, *args, "--resume", study=study, max_steps=steps, workload=workload)
    return one_record(results, again, study)


def sec_resume(ctx: Ctx) -> dict[str, Any]:
    steps = 4000 if ctx.cpu else 300  # --cpu: linreg tiny (about 1 ms a step); GPU: the LM small
    fig: dict[str, Any] = {"workload": "linreg tiny" if ctx.cpu else "wikitext small", "steps": steps,
                           "rtol": RESUME_RTOL}
    variants = [("plain", ())] if ctx.cpu else [("plain", ()), ("deterministic", ("--deterministic",))]
    failures = []
    for name, extra in variants:
        results = ctx.work / f"resume-{name}"
        whole = one_record(results, cli(ctx, results, *extra, study="whole", max_steps=steps,
                                        workload="linreg" if ctx.cpu else "wikitext"), "whole")
        resumed = killed_and_resumed(ctx, results, "resumed", steps, extra)
        a, b = whole["last_metric"], resumed["last_metric"]
        exact = ctx.cpu or name == "deterministic"  # CPU trials and --deterministic CUDA ones: bit-identical
        row = {"uninterrupted": a, "resumed": b, "rel_diff": abs(a - b) / max(abs(a), 1e-30),
               "resumes": resumed.get("resumes"), "steps": resumed["total_steps"], "outcome": resumed["outcome"],
               "required": "bit-identical" if exact else f"within {RESUME_RTOL:g} relative"}
        fig[name] = row
        if resumed.get("resumes", 0) < 1 or resumed["total_steps"] != steps:
            failures.append(f"{name}: not a resumed trial of {steps} steps: {row}")
        elif (a != b) if exact else not row["rel_diff"] <= RESUME_RTOL:
            failures.append(f"{name}: final validation loss {b!r} against {a!r} uninterrupted")
    if failures:
        raise PromiseFailed("; ".join(failures), fig)
    return fig


# ------------------------------------------------------------------------------------------------ (f) NCCL

def nccl_child(out: Path, cpu: bool) -> None:
    """Run under torchrun at one process: a real process group (NCCL on CUDA, gloo on the CPU) through
    optbench's Group, each collective checked; results to ``out`` as JSON."""
    from optbench.parallel.distributed import Group, World, world

    w = world()
    device = torch.device("cpu") if cpu else torch.device("cuda", w.local_rank)
    group = Group(World(rank=w.rank, size=max(w.size, 1), local_rank=w.local_rank), device, trial_index=0)
    res: dict[str, Any] = {"backend": group.backend, "world_size": w.size}
    ps = [torch.nn.Parameter(torch.ones(1000, device=device)), torch.nn.Parameter(torch.ones(10, device=device))]
    ps.append(torch.nn.Parameter(torch.ones(100, device=device, dtype=torch.bfloat16)))
    for p in ps:
        p.grad = torch.full_like(p, 2.0)
    group.all_reduce_grads(ps)
    res["all_reduce_grads"] = all(bool((p.grad == 2.0).all()) for p in ps)  # one rank: the sum is itself
    res["reduce_values"] = group.to_host(group.reduce_values(torch.tensor([1.5, 2.5], device=device)))
    res["agree_max"] = group.agree_max(3.25)
    res["broadcast"] = group.to_host(group.broadcast(torch.tensor([7.0], device=device)))
    start = time.perf_counter()
    for _ in range(100):
        group.check_peers()
    res["check_peers_ms"] = (time.perf_counter() - start) / 100 * 1e3
    import torch.distributed as dist

    dist.destroy_process_group()
    out.write_text(json.dumps(res))


def sec_nccl(ctx: Ctx) -> dict[str, Any]:
    child_out = ctx.work / "nccl.json"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    proc = finish([*launch, str(Path(__file__).resolve()), "--nccl-child", str(child_out),
                   *(["--cpu"] if ctx.cpu else []), str(ctx.work / "unused")])
    if proc.returncode != 0 or not child_out.exists():
        raise PromiseFailed(f"group under torchrun failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    fig: dict[str, Any] = {"group": json.loads(child_out.read_text())}
    g = fig["group"]
    want_backend = "gloo" if ctx.cpu else "nccl"
    problems = []
    if g["backend"] != want_backend or not g["all_reduce_grads"] or g["reduce_values"] != [1.5, 2.5] \
            or g["agree_max"] != 3.25 or g["broadcast"] != [7.0]:
        problems.append(f"collectives: {g}")
    results = ctx.work / "torchrun"
    trial = cli(ctx, results, prefix=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                                      "-m", "optbench"), max_steps=3 if ctx.cpu else 30,
                workload="linreg" if ctx.cpu else "wikitext")
    rec = one_record(results, trial)
    fig["trial"] = {"outcome": rec["outcome"], "steps": rec["total_steps"], "world_size": rec.get("world_size"),
                    "dist_backend": rec.get("dist_backend"), "device": rec.get("device")}
    if rec["outcome"] not in ("reached", "missed"):
        problems.append(f"trial under torchrun: {rec['outcome']}: {rec.get('error')}")
    if problems:
        raise PromiseFailed("; ".join(problems), fig)
    return fig


# ------------------------------------------------------------------------------------------------ the run

def sec_plant(ctx: Ctx) -> dict[str, Any]:
    """--plant-failure: a section whose promise fails (the test of the exit code)."""
    raise PromiseFailed("planted failure", {"planted": True})


# name, function, own time limit (s) on the GPU, least time worth starting it with (s)
SECTIONS: list[tuple[str, Callable[[Ctx], dict[str, Any]], float, float]] = [
    ("sync_audit", sec_sync_audit, 90, 20),
    ("harness", sec_harness, 90, 30),
    ("optimizer_cost", sec_optimizer_cost, 100, 20),
    ("mfu", sec_mfu, 20, 1),
    ("loss_memory", sec_loss_memory, 60, 20),
    ("memory_plan", sec_memory_plan, 90, 30),
    ("compile", sec_compile, 120, 40),
    ("resume", sec_resume, 150, 60),
    ("nccl", sec_nccl, 60, 20),
]


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise SectionTimeout in this (main) thread after ``seconds`` (a subprocess being waited on is killed)."""

    def expire(signum: int, frame: Any) -> None:
        raise SectionTimeout(f"over its time limit of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def environment(ctx: Ctx) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0], "device": str(ctx.device),
                           "mode": "cpu dry run" if ctx.cpu else "gpu"}
    import shutil

    env["gcc"] = shutil.which("gcc") or "none (torch.compile's inductor needs a C compiler)"
    if ctx.device.type == "cuda":
        with contextlib.suppress(Exception):
            env["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                               timeout=20).stdout.strip()
        env.update(gpu=torch.cuda.get_device_name(ctx.device), cuda=torch.version.cuda,
                   allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   float32_matmul_precision=torch.get_float32_matmul_precision())
    return env


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.cpu else "cuda")
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: use --cpu for the dry run", file=sys.stderr)
        return 2
    try:
        import optbench_submissions.adamw  # noqa: F401
        import optbench_workloads.lm  # noqa: F401
    except ImportError as e:
        print(f"optbench is not installed ({e}): python3 -m pip install --no-deps --no-build-isolation --no-index "
              "-e . first", file=sys.stderr)
        return 2
    if args.cpu:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ctx = Ctx(cpu=args.cpu, device=device, out=out, work=work, figures={}, sync_mode=args.sync_mode)
    sections = list(SECTIONS)
    if args.sections:
        wanted = args.sections.split(",")
        sections = [s for s in sections if s[0] in wanted]
    if args.plant_failure:
        sections.insert(0, ("planted", sec_plant, 10, 0))
    report: dict[str, Any] = {"environment": environment(ctx), "budget_s": args.budget, "sections": []}
    jsonl = out / "gpu_check.jsonl"
    jsonl.write_text("")
    for name, fn, limit, least in sections:
        left = args.budget - (time.monotonic() - start)
        entry: dict[str, Any] = {"section": name, "status": "", "seconds": 0.0, "figures": {}, "error": None}
        if left < (1 if args.cpu else least):
            entry.update(status="skipped", error=f"global budget spent ({left:.0f} s left of {args.budget:.0f})")
        else:
            t0 = time.monotonic()
            ctx.partial = {}
            try:
                with time_limit(min(limit * (3 if args.cpu else 1), left)):
                    entry["figures"] = fn(ctx)
                entry["status"] = "pass"
            except Skip as e:
                entry.update(status="skipped", error=str(e))
            except PromiseFailed as e:
                entry.update(status="fail", error=str(e.args[0]),
                             figures=e.args[1] if len(e.args) > 1 and isinstance(e.args[1], dict) else {})
            except BaseException as e:  # noqa: BLE001 -- any error of a section is its failure, and the run goes on
                if isinstance(e, KeyboardInterrupt):
                    raise
                entry.update(status="fail", error=f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}",
                             figures=dict(ctx.partial))
            entry["seconds"] = round(time.monotonic() - t0, 2)
            ctx.figures[name] = entry["figures"]
        report["sections"].append(entry)
        with jsonl.open("a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
        print(f"[{time.monotonic() - start:6.1f} s] {name}: {entry['status']}"
              + (f" -- {str(entry['error']).splitlines()[0][:200]}" if entry["error"] else ""), flush=True)
        _free(ctx)
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # the synthetic corpus and the trials' results
    report["total_seconds"] = round(time.monotonic() - start, 2)
    report["failed"] = [s["section"] for s in report["sections"] if s["status"] == "fail"]
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if report["failed"] else 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# optbench GPU check ({env['mode']})", "",
             ", ".join(f"{k} {v}" for k, v in env.items()) + f"; {report.get('total_seconds', 0)} s of a "
             f"{report['budget_s']:.0f} s budget", "",
             "| section | status | seconds | figures | error |", "|---|---|---|---|---|"]
    for s in report["sections"]:
        err = (str(s["error"]).splitlines()[0][:300] if s["error"] else "").replace("|", "/")
        figs = "<br>".join(f"{k}: {_fmt(v)}" for k, v in s["figures"].items()).replace("|", "/")
        lines.append(f"| {s['section']} | {s['status']} | {s['seconds']} | {figs} | {err} |")
    failed = report.get("failed") or []
    lines += ["", f"failed: {', '.join(failed)}" if failed else "every promise checked held", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for gpu_check.json, gpu_check.md and gpu_check.jsonl")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU: tiny sizes, no speed promises")
    ap.add_argument("--budget", type=float, default=420.0, help="global seconds; later sections are skipped")
    ap.add_argument("--sections", default="", help="comma-separated section names to run (default: all)")
    ap.add_argument("--sync-mode", default="error", choices=("error", "warn"),
                    help="CUDA sync debug mode of the audit (warn: count every sync instead of stopping at one)")
    ap.add_argument("--plant-failure", action="store_true", help=argparse.SUPPRESS)  # the test's failing section
    ap.add_argument("--nccl-child", default=None, help=argparse.SUPPRESS)  # internal: under torchrun
    args = ap.parse_args()
    if args.nccl_child:
        nccl_child(Path(args.nccl_child), args.cpu)
        return
    sys.exit(run(args))


if __name__ == "__main__":
    main()
