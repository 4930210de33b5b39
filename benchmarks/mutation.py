"""Mutation testing of optbench's core modules with mutmut, one module at a time, and a killed/total table.

    .venv/bin/python benchmarks/mutation.py optbench/scoring/profiles.py               # one module, its default tests
    .venv/bin/python benchmarks/mutation.py optbench/scoring/stats.py submissions/adamw.py --time-limit 900
    .venv/bin/python benchmarks/mutation.py optbench/engine/runner.py --tests tests/test_runner.py -k "not cifar"
    .venv/bin/python benchmarks/mutation.py --rerun optbench/scoring/profiles.py       # after adding tests: survivors only
    .venv/bin/python benchmarks/mutation.py --report                          # the table of the last runs
    .venv/bin/python benchmarks/mutation.py --report --survivors --diff       # plus every surviving mutant's diff
    .venv/bin/python benchmarks/mutation.py --list                            # modules and their default tests

Why a script and not a bare ``mutmut run``: mutmut names a mutant after the *file path* of the function it mutates
(``submissions/adamw.py`` -> ``submissions.adamw.x_...``) and only activates it when the running function's
``__module__`` has that name, but this project installs ``submissions/`` as ``optbench_submissions`` and
``workloads/`` as ``optbench_workloads`` (``[tool.setuptools] package-dir``). Run in place, every mutant of a
submission would run the original code and "survive". So each module gets a *stage*, ``mutants/<slug>/``: a snapshot
of the three packages under their import names (``optbench/``, ``optbench_submissions/``, ``optbench_workloads/``),
``tests/`` and a ``pyproject.toml`` whose ``[tool.mutmut]`` section is the repository's plus the module's
``only_mutate`` and test selection. mutmut then copies the stage into ``<stage>/mutants/`` and puts it first on
``sys.path``, so ``import optbench_submissions.adamw`` (directly or through the entry points) finds the mutated copy.
The snapshot also keeps a long run consistent while others edit the working tree; nothing outside ``mutants/``
is written.

mutmut maps each test to the functions it calls (one stats run of the selected tests), so a mutant runs only the
tests that reach its function, and stops at the first failure. A module's run is time-boxed (``--time-limit``);
mutants not checked in time are counted as such in the table, never as killed.

Score: killed / total, where "killed" counts mutants whose tests failed or timed out (a mutant that makes a test hang
is caught). "no tests" are mutants in code no selected test reaches; they count against the score. Reviewed
equivalent mutants (no test can tell them apart) are listed in docs/TESTING.md with the reason, not hidden here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ROOT / "mutants"  # gitignored; one stage per module

# Repository folder -> the import name it is installed under (pyproject.toml, [tool.setuptools] package-dir).
PACKAGE_DIRS = {"optbench": "optbench", "submissions": "optbench_submissions", "workloads": "optbench_workloads"}

# Module -> the fast tests that exercise it (pytest arguments). Files named tests/test_<stem>.py,
# tests/test_mut_<stem>.py, tests/zoo/test_<stem>.py and tests/zoo/test_mut_<stem>.py are added when they exist.
# The submissions without a zoo test of their own (adamw, sgd) are exercised by their conformance rows.
DEFAULT_TESTS: dict[str, list[str]] = {
    "optbench/scoring/profiles.py": ["tests/test_scoring.py"],
    "optbench/scoring/stats.py": ["tests/test_stats.py", "tests/test_stats_rules.py"],
    "optbench/schedules.py": ["tests/test_pure.py", "tests/research/test_schedule_library.py",
                              "tests/test_schedule_keys.py"],
    # The runner's selection leaves out the tests that cost seconds to minutes per mutant (subprocesses, compile,
    # hanging steps, parallel tunes); docs/TESTING.md, "Core modules", lists what each left-out test pins.
    "optbench/engine/runner.py": ["tests/test_runner.py", "tests/test_rules_timing.py", "tests/test_reliability.py", "-k",
                           "not sigkill and not compile_smoke and not compiled_trial and not two_tunes and not "
                           "dead_owner and not never_returns and not bad_tune_input and not reaches_target and not "
                           "same_seed"],
    "optbench/engine/clock.py": ["tests/test_rules_timing.py"],
    # The results store (one module each for records, writing, checking and reading); tests/test_mut_results.py pins
    # the edges of all four.
    **{f"optbench/store/{m}.py": ["tests/test_results.py", "tests/test_mut_results.py"]
       for m in ("records", "writer", "checks", "reader")},
    "optbench/store/fsutil.py": ["tests/test_results.py", "tests/test_store_rules.py"],
    "optbench/sweep/tuning.py": ["tests/test_tuning.py"],
    "optbench/engine/prepared.py": ["tests/test_reliability.py", "tests/test_properties.py", "-k",
                             "not two_tunes and not dead_owner and not never_returns and not hanging and not "
                             "bad_tune_input"],
    "optbench/plugins/hparams.py": ["tests/test_pure.py"],
    "submissions/adamw.py": ["tests/test_conformance.py::test_builtin_submission_conforms", "-k", "adamw"],
    "submissions/sgd.py": ["tests/test_conformance.py::test_builtin_submission_conforms", "-k", "sgd or nesterov"],
    # The matrix helpers soap, shampoo and muon share (eigenbases, inverse roots, Newton-Schulz), through each
    # rule's tests: the helpers have none of their own.
    "submissions/_linalg.py": ["tests/zoo/test_soap.py", "tests/zoo/test_mut_soap.py", "tests/zoo/test_muon.py",
                               "tests/zoo/test_mut_muon.py", "tests/zoo/test_shampoo.py"],
    "submissions/soap.py": [],
    "submissions/muon.py": [],
    "submissions/lion.py": [],
}

# mutmut exit codes -> our columns (mutmut.stats.status_by_exit_code, without importing mutmut here).
KILLED_CODES = {1, 2, 3}  # 2: pytest interrupted (a mutant that makes a test raise KeyboardInterrupt is caught)
TIMEOUT_CODES = {36, -24, 24, 152, 255}
SURVIVED_CODES = {0}
NO_TEST_CODES = {5, 33}


def staged_path(module: str) -> Path:
    """``submissions/adamw.py`` -> ``optbench_submissions/adamw.py``: the path under the import name."""
    top, _, rest = module.partition("/")
    if top not in PACKAGE_DIRS or not rest.endswith(".py"):
        raise ValueError(f"{module!r} is not a .py file under {', '.join(PACKAGE_DIRS)}/")
    return Path(PACKAGE_DIRS[top]) / rest


def stage_dir(module: str) -> Path:
    return STAGES / staged_path(module).with_suffix("").as_posix().replace("/", "__")


def default_tests(module: str) -> list[str]:
    """The module's listed pytest arguments (test paths that do not exist dropped), plus its conventionally named
    test files. A ``-k`` filter in the list also applies to those files; their names contain the module's."""
    stem = Path(module).stem
    listed = DEFAULT_TESTS.get(module, [])
    args = [a for a in listed if not a.startswith("tests/") or (ROOT / a.split("::")[0]).exists()]
    conventional = [f"tests/test_{stem}.py", f"tests/test_mut_{stem}.py",
                    f"tests/zoo/test_{stem}.py", f"tests/zoo/test_mut_{stem}.py"]
    return args + [p for p in conventional if (ROOT / p).exists() and p not in listed]


def _toml_value(value: object) -> str:
    # JSON spells strings, numbers, booleans and lists of them the way TOML does.
    return json.dumps(value)


def mutmut_section(module: str, tests: list[str]) -> str:
    """The stage's [tool.mutmut]: the repository's settings plus this module's only_mutate and test selection."""
    settings = dict(tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("mutmut", {}))
    settings["only_mutate"] = [staged_path(module).as_posix()]
    settings["pytest_add_cli_args_test_selection"] = tests
    return "[tool.mutmut]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in settings.items())


def _without_mutmut_section(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            out.append(line)
    return "".join(out)


def build_stage(module: str, tests: list[str]) -> Path:
    """A fresh stage for ``module``: packages under their import names, tests, and the generated pyproject."""
    stage = stage_dir(module)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder, name in PACKAGE_DIRS.items():
        shutil.copytree(ROOT / folder, stage / name, ignore=ignore)
    shutil.copytree(ROOT / "tests", stage / "tests", ignore=ignore)
    pyproject = _without_mutmut_section((ROOT / "pyproject.toml").read_text())
    (stage / "pyproject.toml").write_text(pyproject.rstrip() + "\n\n" + mutmut_section(module, tests))
    (stage / "module.json").write_text(json.dumps({"module": module, "tests": tests}))
    return stage


def refresh_tests(module: str, tests: list[str]) -> Path:
    """Keep the stage's source snapshot and results; bring its tests and test selection up to date."""
    stage = stage_dir(module)
    shutil.rmtree(stage / "tests")
    shutil.copytree(ROOT / "tests", stage / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    text = _without_mutmut_section((stage / "pyproject.toml").read_text())
    (stage / "pyproject.toml").write_text(text.rstrip() + "\n\n" + mutmut_section(module, tests))
    (stage / "module.json").write_text(json.dumps({"module": module, "tests": tests}))
    return stage


def run_mutmut(stage: Path, *, max_children: int, time_limit: float, names: list[str] = ()) -> tuple[int | None, float]:
    """``mutmut run [names]`` in the stage, output to ``<stage>/mutmut.log``; its process group is killed at the
    time limit. Returns (exit code or None when time-boxed, seconds).
    """
    start = time.monotonic()
    with open(stage / "mutmut.log", "a") as log:
        cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
        # mutmut forks a child per mutant from a process that has already run torch: with torch's intra-op thread
        # pool alive, a forked child can deadlock in its first parallel op and be filed as a "timeout", a kill
        # that proves nothing. One intra-op thread keeps forks safe (and mutmut's CPU-seconds limit meaningful).
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, cwd=stage, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        try:
            code: int | None = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the group of the mutmut we started: it and its test workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    return code, time.monotonic() - start


def last_log_line(stage: Path) -> str:
    """The last line of mutmut's log that is not a progress spinner."""
    text = (stage / "mutmut.log").read_text(errors="replace").replace("\r", "\n")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip()[:1] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"]
    return lines[-1] if lines else "(empty log)"


@dataclass(frozen=True)
class Score:
    module: str
    counts: Counter
    survivors: list[str]
    no_tests: list[str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def caught(self) -> int:
        return self.counts["killed"] + self.counts["timeout"]


def _meta_codes(module: str) -> dict[str, int | None] | None:
    meta = stage_dir(module) / "mutants" / (staged_path(module).as_posix() + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else None


def save_results(module: str) -> None:
    """Merge mutmut's latest exit codes into ``<stage>/results.json``.

    A ``--rerun`` changes the test selection, and mutmut then forgets the verdicts of the mutants it was not asked
    to re-test; the earlier verdicts (kills by tests that are still there) are kept from this file.
    """
    codes = _meta_codes(module)
    if codes is None:
        return
    path = stage_dir(module) / "results.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update({k: v for k, v in codes.items() if v is not None or k not in merged})
    path.write_text(json.dumps(merged, indent=0, sort_keys=True))


def read_score(module: str) -> Score | None:
    """The verdicts recorded for ``module`` (see :func:`save_results`), or None if it never ran."""
    path = stage_dir(module) / "results.json"
    codes = json.loads(path.read_text()) if path.exists() else _meta_codes(module)
    if codes is None:
        return None
    counts: Counter = Counter()
    survivors, no_tests = [], []
    for name, code in sorted(codes.items()):
        if code in KILLED_CODES:
            counts["killed"] += 1
        elif code in TIMEOUT_CODES:
            counts["timeout"] += 1
        elif code in SURVIVED_CODES:
            counts["survived"] += 1
            survivors.append(name)
        elif code in NO_TEST_CODES:
            counts["no tests"] += 1
            no_tests.append(name)
        elif code is None:
            counts["not checked"] += 1
        else:
            counts["other"] += 1  # suspicious, segfault, ...: look at it with `mutmut show`
            survivors.append(name)
    return Score(module, counts, survivors, no_tests)


COLUMNS = ("killed", "timeout", "survived", "no tests", "not checked", "other")


def table(scores: list[Score]) -> str:
    """Markdown table: module, one column per outcome, total, and caught/total."""
    head = "| module | " + " | ".join(COLUMNS) + " | total | killed/total | killed/checked |"
    rule = "|---" * (len(COLUMNS) + 4) + "|"
    rows = []
    for s in scores:
        checked = s.total - s.counts["not checked"]
        pct = f"{s.caught}/{s.total} ({100 * s.caught / s.total:.0f}%)" if s.total else "-"
        # a time-boxed run: the score over the mutants it reached (mutmut runs the fastest-tested first)
        part = f"{s.caught}/{checked} ({100 * s.caught / checked:.0f}%)" if checked else "-"
        rows.append(f"| {s.module} | " + " | ".join(str(s.counts[c]) for c in COLUMNS)
                    + f" | {s.total} | {pct} | {part} |")
    return "\n".join([head, rule, *rows])


def show_diff(module: str, name: str) -> str:
    """The changed lines of one mutant (``mutmut show`` without its context lines)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=stage_dir(module),
                         capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    return "\n".join("    " + ln for ln in lines) if out.returncode == 0 else out.stdout + out.stderr


def recorded_modules() -> list[str]:
    found = []
    for m in sorted(STAGES.glob("*/module.json")) if STAGES.exists() else []:
        found.append(json.loads(m.read_text())["module"])
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="source files, e.g. optbench/scoring/profiles.py submissions/adamw.py")
    ap.add_argument("--tests", nargs="+", help="pytest arguments selecting the tests (default: the module's list)")
    ap.add_argument("-k", dest="keyword", help="a pytest -k expression added to the test selection")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant workers (default 1; 2 at most here)")
    ap.add_argument("--time-limit", type=float, default=1200, help="seconds per module before it is cut off")
    ap.add_argument("--rerun", action="store_true",
                    help="re-test only the last run's survivors and untested mutants against the current tests "
                         "(same source snapshot): the loop for writing killing tests")
    ap.add_argument("--report", action="store_true", help="only print the table of the modules already run")
    ap.add_argument("--survivors", action="store_true", help="list surviving and untested mutants")
    ap.add_argument("--diff", action="store_true", help="with --survivors: print each one's diff")
    ap.add_argument("--list", action="store_true", help="print the modules and their default tests")
    args = ap.parse_args(argv)

    if args.list:
        for m in DEFAULT_TESTS:
            print(f"{m}: {' '.join(default_tests(m)) or '(no tests found)'}")
        return 0
    modules = args.modules or (recorded_modules() if args.report else [])
    if not modules:
        ap.error("name at least one module (or --report, --list)")
    for m in modules:  # validate every name before the first long run: one line, exit code 2
        try:
            staged_path(m)
        except ValueError as err:
            ap.error(str(err))
        if not args.report and not (ROOT / m).is_file():
            ap.error(f"no such file: {m}")
        if args.rerun and read_score(m) is None:
            ap.error(f"{m} has no earlier run to re-test; run it without --rerun first")
    if not args.report:
        for m in modules:
            tests = list(args.tests) if args.tests else default_tests(m)
            if args.keyword:
                tests += ["-k", args.keyword]
            if not tests:
                ap.error(f"no tests for {m}; pass --tests")
            names: list[str] = []
            if args.rerun:
                last = read_score(m)
                names = last.survivors + last.no_tests
                stage = refresh_tests(m, tests)
            else:
                stage = build_stage(m, tests)
            what = f"{len(names)} earlier survivors" if args.rerun else "all mutants"
            print(f"{m}: mutmut, {what}, over {' '.join(tests)} (stage {stage.relative_to(ROOT)})", flush=True)
            if args.rerun and not names:
                continue
            code, secs = run_mutmut(stage, max_children=args.max_children, time_limit=args.time_limit, names=names)
            save_results(m)
            state = "cut off at the time limit" if code is None else f"exit {code}"
            print(f"  {state} after {secs:.0f} s; log: {(stage / 'mutmut.log').relative_to(ROOT)}", flush=True)
            if code:  # e.g. "FAILED: Unable to force test failures": no selected test reaches a mutated function
                print(f"  mutmut: {last_log_line(stage)}", flush=True)
    scores = [s for s in (read_score(m) for m in modules) if s is not None]
    print(table(scores))
    if args.survivors:
        for s in scores:
            for kind, names in (("survived", s.survivors), ("no tests", s.no_tests)):
                for name in names:
                    print(f"{kind}: {name}")
                    if args.diff:
                        print(show_diff(s.module, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
