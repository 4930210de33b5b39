"""Scoring at lab scale (issue 11): whole-process ``optbench score`` and ``report`` on 100 to 10,000 trials, cold
(no summary cache) and warm, and the 360-trial AlgoPerf fixture against AlgoPerf's scorer.

Every figure is one whole ``optbench`` process (interpreter start and imports included), timed from outside;
variants alternate within each repeat and the table shows medians over repeats, with the children's peak RSS.

Usage::

    python benchmarks/score_scale.py                       # growth table: 100, 1,000, 10,000 trials
    python benchmarks/score_scale.py --sizes 100 1000 --repeats 3 --no-report
    python benchmarks/score_scale.py --algoperf --baseline /tmp/base   # the 360-trial fixture, side by side

``--baseline DIR`` times another optbench too (a folder holding its ``optbench`` package, e.g. made with
``git archive <rev> optbench | tar -x -C DIR``), alternating with this one: its import and score of the fixture,
and in the growth table its cold report. Trials are written through the real
writer (:func:`optbench.store.writer.write_trial`), ``evals`` evaluations each, into ``--work`` (kept between runs: a
folder already holding N trials is reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = ".optbench-cache"
WORKLOADS, SUBMISSIONS, STUDIES = 4, 5, 5  # N trials = 100 x trials per study


# ------------------------------------------------------------------------------------------- synthetic trials


def _write_chunk(args: tuple[str, int, int, int]) -> int:
    """Write trials ``start .. stop-1`` of a results directory (one worker's share)."""
    from optbench import SCHEMA_VERSION
    from optbench.store.records import EvalRow, TrialRecord
    from optbench.store.writer import write_trial

    root, start, stop, evals = args
    for n in range(start, stop):  # trial n: workload, submission, study and trial index from its digits
        w, s = n % WORKLOADS, (n // WORKLOADS) % SUBMISSIONS
        k, t = (n // (WORKLOADS * SUBMISSIONS)) % STUDIES, n // (WORKLOADS * SUBMISSIONS * STUDIES)
        speed = 1.0 + 0.15 * s + 0.05 * ((n * 7919) % 13) / 13
        reach = (n * 104729) % 10 < 7  # 70% of the trials reach
        metric = [1.0 / (1 + i / (10 * speed)) + (0.0 if reach else 0.2) for i in range(evals)]
        hit = next((i for i, m in enumerate(metric) if m <= 0.3), None)
        rows = [EvalRow(step=10 * i, examples=320 * i, tokens=320 * i, timed_seconds=0.5 * i * speed,
                        eval_seconds=0.01 * i, wall_seconds=0.6 * i * speed, train_loss=metric[i] * 1.1,
                        metric_value=metric[i], learning_rate=1e-3, batch_size=32,
                        metrics_json=json.dumps({"loss": metric[i]})) for i in range(evals)]
        seen = rows[: hit + 1] if hit is not None else rows
        rec = TrialRecord(
            schema_version=SCHEMA_VERSION, run_id=f"r{n:06d}", created_at="2026-01-01T00:00:00+00:00",
            workload=f"w{w}", size="tiny", workload_origin="bench==0", submission=f"sub{s}",
            submission_origin="bench==0", hparams=json.dumps({"lr": 10 ** (-4 + (n % 7) / 3)}), seed=n,
            study=f"study-{k}", trial=str(t), outcome="reached" if hit is not None else "missed",
            metric_name="loss", metric_goal="min", target=0.3,
            time_to_target=seen[-1].timed_seconds if hit is not None else None,
            steps_to_target=seen[-1].step if hit is not None else None,
            examples_to_target=seen[-1].examples if hit is not None else None,
            tokens_to_target=seen[-1].tokens if hit is not None else None,
            best_metric=min(m.metric_value for m in seen),
            total_steps=seen[-1].step, total_timed_seconds=seen[-1].timed_seconds, max_steps=10 * evals,
            max_seconds=None, error=None, optbench_version="bench", code_hash="h", git_commit="",
            torch_version="2", python_version="3.11", device="cpu", device_name="cpu", cpu_model="bench cpu")
        write_trial(Path(root), rec, seen)
    return stop - start


def make_results(root: Path, n: int, *, evals: int) -> Path:
    """A results directory of ``n`` synthetic trials (reused when one of that size is already there)."""
    marker = root / ".bench-complete"
    if marker.exists() and marker.read_text() == f"{n} {evals}":
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    chunks = [(str(root), a, min(n, a + 250), evals) for a in range(0, n, 250)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert sum(pool.map(_write_chunk, chunks)) == n
    marker.write_text(f"{n} {evals}")
    return root


# ----------------------------------------------------------------------------------------------------- timing


def _env(package_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if package_dir is not None:  # the baseline's package first; cwd is a neutral folder, so this one wins
        env["PYTHONPATH"] = str(package_dir)
    return env


def timed(argv: list[str], *, package_dir: Path | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process; a failure stops the
    benchmark with its output. On a shared machine the CPU seconds are the steadier figure: another process's load
    stretches the wall time of a mostly single-threaded child, much less its CPU time."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=_env(package_dir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.stderr.close() if proc.stderr else None
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def optbench(*args: str) -> list[str]:
    return [sys.executable, "-c", "from optbench.cli import main; main()", *args]


Sample = tuple[float, float, float]  # wall s, CPU s, peak RSS MiB


def medians(samples: dict[str, list[Sample]]) -> dict[str, Sample]:
    """Median wall and CPU seconds over the repeats, and the largest peak RSS."""
    return {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), max(x[2] for x in v))
            for k, v in samples.items()}


def scale(args: argparse.Namespace) -> None:
    """The growth table: score and report, cold and warm, per size."""
    rows = []
    for n in args.sizes:
        root = make_results(args.work / f"trials-{n}", n, evals=args.evals)
        samples: dict[str, list[Sample]] = {}
        score = ["score", "--format", "csv"]
        # What each variant deletes first: every cache (cold), the plot cache only (every plot changed: the
        # report of a results directory whose every workload got new trials), or nothing (warm).
        variants: list[tuple[str, list[str], str | None, Path | None]] = [
            ("score cold", score, CACHE, None), ("score warm", score, None, None)]
        if args.report:
            report = ["report", "--out", str(args.work / "report")]
            variants += [("report cold", report, CACHE, None),
                         ("report, plots redrawn", report, f"{CACHE}/plots", None), ("report warm", report, None, None)]
            if args.baseline is not None:  # cold for both: an older optbench rebuilds a newer summary cache
                variants.append(("report cold (baseline)", report, CACHE, args.baseline))
        for _ in range(args.repeats):
            for name, argv, drop, pkg in variants:
                if drop:
                    shutil.rmtree(root / drop, ignore_errors=True)
                samples.setdefault(name, []).append(timed(optbench(*argv, "--results-dir", str(root)),
                                                          package_dir=pkg))
        rows.append((n, medians(samples)))
        print(f"  {n} trials: " + ", ".join(f"{k} {w:.2f} s" for k, (w, _, _) in rows[-1][1].items()), flush=True)
    names = list(rows[0][1])
    print(f"\n{args.evals} evaluations per trial, medians of {args.repeats}: wall (CPU) seconds, peak RSS over "
          "repeats\n")
    print("| trials | " + " | ".join(names) + " | peak RSS |")
    print("|---:|" + "---:|" * (len(names) + 1))
    for n, m in rows:
        rss = max(r for _, _, r in m.values())
        print(f"| {n:,} | " + " | ".join(f"{m[k][0]:.2f} s ({m[k][1]:.2f})" for k in names) + f" | {rss:.0f} MiB |")
    if len(rows) > 1:
        print("\ngrowth (CPU seconds, ratio to the previous size):")
        for (n0, m0), (n1, m1) in zip(rows, rows[1:]):
            print(f"  {n0:,} -> {n1:,}: " + ", ".join(f"{k} x{m1[k][1] / m0[k][1]:.1f}" for k in names))


def algoperf(args: argparse.Namespace) -> None:
    """The 360-trial AlgoPerf fixture: import and score, against the baseline and AlgoPerf's scorer (stand-in)."""
    sys.path.insert(0, str(HERE))
    from algoperf_fixture import make_tree

    logs = args.work / "algoperf-logs"
    if not (logs / ".complete").exists():
        shutil.rmtree(logs, ignore_errors=True)
        print("trials in the fixture:", make_tree(logs))
        (logs / ".complete").write_text("")
    ours, base = args.work / "ap-ours", args.work / "ap-base"
    stand_in = [sys.executable, str(HERE / "algoperf_style_score.py"), str(logs)]
    samples: dict[str, list[Sample]] = {}
    for _ in range(args.repeats):
        imports = [("import (this optbench)", ours, None)]
        if args.baseline is not None:
            imports.append(("import (baseline)", base, args.baseline))
        for name, results, pkg in imports:
            shutil.rmtree(results, ignore_errors=True)
            samples.setdefault(name, []).append(
                timed(optbench("import", "algoperf", str(logs), "--results-dir", str(results)), package_dir=pkg))
        score = ["score", "--algoperf", "--results-dir"]
        shutil.rmtree(ours / CACHE, ignore_errors=True)
        samples.setdefault("score --algoperf, cold cache", []).append(timed(optbench(*score, str(ours))))
        samples.setdefault("score --algoperf, warm cache", []).append(timed(optbench(*score, str(ours))))
        if args.baseline is not None:
            samples.setdefault("score --algoperf (baseline)", []).append(
                timed(optbench(*score, str(base)), package_dir=args.baseline))
        samples.setdefault("AlgoPerf-style scorer (stand-in)", []).append(timed(stand_in))
        samples.setdefault("stand-in + import torch", []).append(timed([*stand_in, "--import-torch"]))
    m = medians(samples)
    print(f"\n360-trial AlgoPerf fixture, medians of {args.repeats}\n")
    print("| process | wall | CPU | peak RSS |\n|---|---:|---:|---:|")
    for k, (w, c, r) in m.items():
        print(f"| {k} | {w:.2f} s | {c:.2f} s | {r:.0f} MiB |")
    print("\nratios, wall (CPU): other / this optbench")
    for k in ("AlgoPerf-style scorer (stand-in)", "stand-in + import torch", "score --algoperf (baseline)"):
        for ours in ("score --algoperf, cold cache", "score --algoperf, warm cache"):
            if k in m:
                print(f"  {k} / {ours}: {m[k][0] / m[ours][0]:.2f}x ({m[k][1] / m[ours][1]:.2f}x)")
    if "import (baseline)" in m:
        base, this = m["import (baseline)"], m["import (this optbench)"]
        print(f"  import algoperf, baseline / this: {base[0] / this[0]:.2f}x ({base[1] / this[1]:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--evals", type=int, default=100, help="Evaluations per synthetic trial.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-report", dest="report", action="store_false", help="Time score only.")
    parser.add_argument("--algoperf", action="store_true", help="Only the 360-trial AlgoPerf fixture.")
    parser.add_argument("--baseline", type=Path, default=None, help="Folder holding another optbench package.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "optbench-score-scale")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "optbench" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no optbench package there")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    if args.algoperf:
        algoperf(args)
    else:
        scale(args)


if __name__ == "__main__":
    main()
