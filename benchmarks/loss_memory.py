"""Peak memory of the LM loss: plain cross-entropy over the whole batch's logits vs the chunked one.

    python benchmarks/loss_memory.py                    # V = 50257, 8 x 1024 tokens, d = 768 (GPT-2 small's head)
    python benchmarks/loss_memory.py --tokens 256 --vocab 1000 --d-model 16      # the test's run

Each variant computes the loss of hidden states h (N, d) through the tied head W (V, d) and back-propagates it,
in a fresh process (so one variant's freed memory cannot hide the other's peak): on CUDA the figure is the peak
of ``torch.cuda.max_memory_allocated`` above what h, W and the targets hold; on the CPU, the rise of the process's
peak resident set (``ru_maxrss``) over its resident set before the loss.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    """The current resident set (Linux /proc), in bytes."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def one(variant: str, tokens: int, vocab: int, d_model: int, device: str) -> float:
    """Peak extra GiB of one loss + backward."""
    import torch
    import torch.nn.functional as F

    from optbench_workloads._loss import head_cross_entropy

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, d_model, generator=g).to(dev).requires_grad_()
    w = (0.02 * torch.randn(vocab, d_model, generator=g)).to(dev).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), generator=g).to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_bytes()
    loss = F.cross_entropy(F.linear(h, w).float(), y) if variant == "plain" else head_cross_entropy(h, w, y)
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**30
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8 * 1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one variant and print it
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tokens, args.vocab, args.d_model, args.device)))
        return
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    peaks = {}
    for variant in ("plain", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--one", variant, "--tokens", str(args.tokens), "--vocab",
                              str(args.vocab), "--d-model", str(args.d_model), "--device", device],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        peaks[variant] = float(out.stdout.strip().splitlines()[-1])
    print(f"# loss + backward, {args.tokens} tokens, V = {args.vocab}, d = {args.d_model}, on {device}")
    print("| loss | peak extra memory GiB |")
    print("|---|---|")
    for variant, gib in peaks.items():
        print(f"| {variant} | {gib:.3f} |")
    print(f"chunked/plain memory ratio: {peaks['chunked'] / max(peaks['plain'], 1e-9):.3f}")


if __name__ == "__main__":
    main()
