"""The wikitext `tiny` tier end to end on a real-format corpus: prepare, input-pipeline share, time to target.

    python benchmarks/lm_tiny.py [--chars 40000000] [--seeds 1] [--keep DIR]

No WikiText-103 copy can be downloaded here, so the corpus is built from English text already on the machine
(Debian's package documentation, man pages and Vim's help, as docs/WORKLOADS.md describes), written as a
`wikitext-103-raw-v1.zip` in the real layout (``wiki.{train,valid,test}.raw`` of `` = Title = `` articles), served
from a loopback HTTP server and prepared by the real path (`optbench.data.prepare`: download, checksum, unzip,
byte-level BPE of 8192 ids, flat token files). Then, on the prepared data:

1. input pipeline: seconds per `next_batch` against seconds per whole training step (median of alternating
   repeats), i.e. the share of a step spent producing its batch;
2. `run_trial(wikitext, tiny, adamw)` per seed: time to target, steps, tokens per timed second.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import random
import re
import statistics
import tempfile
import threading
import time
import zipfile
from dataclasses import replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch


def local_documents(max_chars: int) -> list[str]:
    """English documents found on the machine, shuffled with a fixed seed, up to ``max_chars`` characters."""
    paths = sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt")) + sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))
    paths += sorted(p for p in glob.glob("/usr/share/doc/**/*", recursive=True) if p.endswith((".gz", ".txt", ".md")))
    random.Random(0).shuffle(paths)
    docs, total = [], 0
    for p in paths:
        try:
            text = gzip.open(p, "rt", errors="ignore").read() if p.endswith(".gz") else Path(p).read_text(errors="ignore")
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        text = re.sub(r"^\.\S+\s?", "", text, flags=re.M)  # roff requests of man pages
        text = re.sub(r"[ \t]*\n[ \t]*", " \n ", text.strip())
        if len(text) < 200 or "=" in text[:2]:
            continue
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return docs


def wikitext_zip(docs: list[str]) -> bytes:
    """A wikitext-103-raw-v1.zip in the real layout: 1% valid, 1% test, the rest train."""
    arts = [f" = Document {i} = \n \n {d} \n \n" for i, d in enumerate(docs)]
    n = max(1, len(arts) // 100)
    splits = {"valid": arts[:n], "test": arts[n:2 * n], "train": arts[2 * n:]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, items in splits.items():
            zf.writestr(f"wikitext-103-raw/wiki.{split}.raw", (" \n" + "".join(items)).encode())
    return buf.getvalue()


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def prepare(data_dir: Path, chars: int) -> float:
    """Build, serve and prepare the corpus; returns the seconds `prepare` took."""
    from optbench import data
    from optbench.data import catalog
    from optbench.data.text import TextOptions

    archive = wikitext_zip(local_documents(chars))
    site = Path(tempfile.mkdtemp())
    (site / "wikitext-103-raw-v1.zip").write_bytes(archive)
    remote = replace(catalog.WIKITEXT103.files[0], checksum="sha256:" + hashlib.sha256(archive).hexdigest(),
                     size=len(archive))
    httpd, url = serve(site)
    try:
        t0 = time.perf_counter()
        data.prepare(replace(catalog.WIKITEXT103, files=(remote,)), data_dir=data_dir, mirror=url,
                     text=TextOptions(tokenizer="bpe", vocab_size=8192))
        return time.perf_counter() - t0
    finally:
        httpd.shutdown()


def pipeline_share(data_dir: Path, repeats: int = 7, steps: int = 30) -> tuple[float, float]:
    """Median seconds per batch and per whole step (batch + forward + backward + AdamW), alternating."""
    from optbench.api import TrialInfo
    from optbench.plugins.registry import load_submission
    from optbench_workloads.lm import wikitext

    size = wikitext.sizes["tiny"]
    task = wikitext.setup(size, device=torch.device("cpu"), data_dir=data_dir)
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    sub = load_submission("adamw").obj
    opt = sub.create(model, dict(sub.defaults), TrialInfo(workload="wikitext", size="tiny", step_hint=1000,
                                                          max_steps=1500, batch_size=16, device="cpu", seed=0))
    batch_t, step_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            task.next_batch(size.batch_size, gen)
        batch_t.append((time.perf_counter() - t0) / steps)
        t0 = time.perf_counter()
        for _ in range(steps):
            b = task.next_batch(size.batch_size, gen)
            task.loss(model, b).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        step_t.append((time.perf_counter() - t0) / steps)
    return statistics.median(batch_t), statistics.median(step_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=40_000_000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="data directory to reuse (prepared if empty)")
    args = ap.parse_args()
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, run_trial

    data_dir = args.keep or Path(tempfile.mkdtemp())
    if not (data_dir / "wikitext103" / "manifest.json").exists():
        print(f"prepare: {prepare(data_dir, args.chars):.1f} s for ~{args.chars / 1e6:.0f}M characters")
    per_batch, per_step = pipeline_share(data_dir)
    print(f"input pipeline: {per_batch * 1e3:.2f} ms per batch, {per_step * 1e3:.1f} ms per step "
          f"({100 * per_batch / per_step:.2f}% of the step)")
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as out:
            r = run_trial(load_workload("wikitext"), load_submission("adamw"),
                          TrialConfig(size="tiny", seed=seed, data_dir=data_dir), results_dir=Path(out))
        rec = r.record
        rate = rec.tokens_to_target / rec.time_to_target if rec.time_to_target else float("nan")
        print(f"seed {seed}: {rec.outcome}; target {rec.target} (best {rec.best_metric:.3f}) at step "
              f"{rec.steps_to_target}, {rec.time_to_target or float('nan'):.1f} s timed, "
              f"{rec.tokens_to_target} tokens, {rate:,.0f} tokens/s; threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
