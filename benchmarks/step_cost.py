"""Per-step cost of submissions relative to AdamW on a small GPT: whole training steps, interleaved, median of rounds.

    python benchmarks/step_cost.py                            # adamw soap shampoo muon
    python benchmarks/step_cost.py --opt adamw --opt soap -o soap:precondition_frequency=20
    python benchmarks/step_cost.py --all                      # every registered submission
    python benchmarks/step_cost.py --opt soap --opt soap1=soap -o soap1:one_sided=true   # two configurations

The model is the repository's GPT (``optbench_workloads._gpt``) at 4 layers, width 128, 4 heads, sequence 128,
batch 8, vocabulary 8192 (tied head), in float32. A *step* is what the harness times: zero_grad, forward, loss,
backward and ``updater.step()`` (with the closure the submission's capabilities ask for), so an optimizer's cost is
seen against a real forward/backward, not in isolation. Every submission gets its own copy of the same initial model
and its defaults (plus any ``-o NAME:KEY=VALUE``); after a warm-up they are timed round after round, each round
``--steps`` steps per submission (a multiple of 10 covers SOAP's and Shampoo's periodic refreshes in proportion), the
submissions taking their steps interleaved one by one, so the drifting load of a shared machine hits all alike.
The table gives the median over rounds of the mean step time, and the median (and min-max) over rounds of the ratio
to AdamW's mean step time in the same round. On a shared machine ``--threads 1`` gives far steadier ratios: with
two threads a descheduled worker thread stalls every parallel kernel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from optbench.api import Capability, Submission, TrialInfo
from optbench.errors import UsageError
from optbench.plugins.hparams import merge, parse_value
from optbench.plugins.registry import entry_points, load_submission
from optbench_workloads._gpt import GPTConfig, build_gpt

DEFAULT_OPTS = ("adamw", "soap", "shampoo", "muon")


@dataclass(frozen=True, kw_only=True)
class Bench:
    """The small LM of the measurement: GPT shape, sequence length, batch and vocabulary."""

    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    seq_len: int = 128
    batch: int = 8
    vocab: int = 8192


@dataclass
class Runner:
    """One submission's model, updater and step function."""

    name: str
    step: Callable[[], None]
    times: list[float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(name: str, sub: Submission, hparams: dict[str, Any], bench: Bench, device: torch.device,
                total_steps: int) -> Runner:
    """A closure that performs one whole training step of ``sub`` on its own copy of the model.

    Args:
      name: label in the table.
      sub: the submission.
      hparams: its merged hyperparameters.
      bench: model and batch sizes.
      device: where to run.
      total_steps: schedule length handed to the submission (as the workload's step_hint).
    Returns:
      The runner.
    """
    cfg = GPTConfig(vocab_size=bench.vocab, seq_len=bench.seq_len, n_layer=bench.n_layer, n_head=bench.n_head,
                    d_model=bench.d_model)
    model = build_gpt(cfg, torch.Generator().manual_seed(0)).to(device)
    info = TrialInfo(workload="step_cost", size="bench", step_hint=total_steps, max_steps=total_steps,
                     batch_size=bench.batch, device=str(device), seed=0)
    updater = sub.create(model, hparams, info)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, bench.vocab, (bench.batch, bench.seq_len + 1), generator=gen).to(device)
               for _ in range(4)]
    caps = set(sub.capabilities)
    wants_closure = bool({Capability.CLOSURE, Capability.SAMPLED_LOSS} & caps)
    sample_gen = torch.Generator(device=device).manual_seed(2)
    state = {"i": 0}

    def loss_on(tokens: torch.Tensor, sampled: bool) -> torch.Tensor:
        logits = model(tokens[:, :-1])  # (B, T, V)
        labels = tokens[:, 1:]
        if sampled:  # labels drawn from the model's own predictive distribution (Sophia's GNB estimator)
            probs = logits.detach().float().softmax(-1).reshape(-1, bench.vocab)
            labels = torch.multinomial(probs, 1, generator=sample_gen).view_as(labels)
        return F.cross_entropy(logits.reshape(-1, bench.vocab).float(), labels.reshape(-1))

    def step() -> None:
        tokens = batches[state["i"] % len(batches)]
        state["i"] += 1
        updater.zero_grad(set_to_none=True)
        loss_on(tokens, False).backward()
        if wants_closure:
            def closure(sampled: bool = False) -> torch.Tensor:
                updater.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    loss = loss_on(tokens, sampled)
                    loss.backward()
                return loss.detach()

            updater.step(closure)
        else:
            updater.step()

    return Runner(name=name, step=step, times=[])


def measure(runners: list[Runner], *, steps: int, rounds: int, warmup: int, device: torch.device) -> None:
    """Warm every runner up, then ``rounds`` rounds of ``steps`` steps each, the runners interleaved step by step.

    Interleaving single steps (rather than blocks) keeps the runners' timings paired in time, so the load of a
    shared machine, which drifts over seconds, cancels in the per-round ratios. Each runner still takes its own
    steps in sequence, so periodic work (SOAP's refreshes) falls into the rounds in proportion.
    """
    for r in runners:
        for _ in range(warmup):
            r.step()
    for _ in range(rounds):
        spent = [0.0] * len(runners)
        for _ in range(steps):
            for k, r in enumerate(runners):
                _sync(device)
                t0 = time.perf_counter()
                r.step()
                _sync(device)
                spent[k] += time.perf_counter() - t0
        for r, total in zip(runners, spent):
            r.times.append(total / steps)


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["soap:lr=0.1"]`` -> ``{"soap": {"lr": 0.1}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, assignment = item.partition(":")
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise UsageError(f"-o expects NAME:KEY=VALUE, got {item!r}")
        out.setdefault(name, {})[key] = parse_value(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opt", action="append", default=None,
                    help="submission name or spec such as pkg.module:name (repeatable; labelled by the last part),"
                         " or LABEL=SPEC to run one submission twice with different -o LABEL:KEY=VALUE")
    ap.add_argument("--all", action="store_true", help="every registered submission")
    ap.add_argument("-o", "--opt-arg", action="append", default=[], help="NAME:KEY=VALUE hyperparameter override")
    ap.add_argument("--steps", type=int, default=20, help="steps per round per submission")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--batch", type=int, default=Bench.batch, help="sequences per batch (tokens = batch x 128)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = sorted(entry_points("submissions")) if args.all else list(args.opt or DEFAULT_OPTS)
    if "adamw" not in names:
        names.insert(0, "adamw")  # the reference of the ratios
    device = torch.device(args.device)
    bench = Bench(batch=args.batch)
    overrides = _overrides(args.opt_arg)
    total = args.warmup + args.rounds * args.steps
    runners = []
    for item in names:
        label, sep, spec = item.partition("=")
        spec = spec if sep else label
        name = label if sep else spec.rpartition(":")[2]  # "pkg.module:soap" is labelled "soap"
        sub = load_submission(spec).obj
        hp = merge(sub.defaults, overrides.get(name, {}), submission=name)
        runners.append(make_runner(name, sub, hp, bench, device, total))
    measure(runners, steps=args.steps, rounds=args.rounds, warmup=args.warmup, device=device)
    base = next(r for r in runners if r.name == "adamw")
    print(f"GPT {bench.n_layer}x{bench.d_model}, seq {bench.seq_len}, batch {bench.batch}, vocab {bench.vocab}; "
          f"{device}, {torch.get_num_threads()} threads; {args.rounds} rounds x {args.steps} steps, interleaved")
    print(f"{'submission':<16}{'ms/step':>10}{'vs adamw':>10}{'ratio min-max':>16}")
    for r in runners:
        ratios = [t / b for t, b in zip(r.times, base.times)]  # paired within each round
        print(f"{r.name:<16}{1e3 * statistics.median(r.times):>10.1f}{statistics.median(ratios):>9.2f}x"
              f"{min(ratios):>9.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    try:
        main()
    except UsageError as exc:  # an unknown name or hyperparameter: one line, exit code 2, as the CLI does
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
