"""Randomized bad invocations of the real ``optbench`` command (issue 8's acceptance harness).

Each *kind* of bad input (numbers the store or torch cannot hold, unchecked values, deep JSON, unwritable
destinations, rich/mathtext markup, damaged result files and manifests, non-UTF-8 argv, damaged AlgoPerf logs,
unknown names, random mixes) is a generator function ``gen_<kind>(rng) -> Case``. A case is a few files to set up
and one or more invocations; each invocation runs as a real subprocess in its own scratch folder that holds a copy
of a pre-populated results directory (real trials of ``optbench run -w linreg``). The checks, per invocation:

* no ``Traceback`` on stdout or stderr;
* exit code 0, 1 or 2 (no signal, no 130, no 3);
* no hang past the per-invocation timeout (the process group is killed);
* optional per-case expectations (an unwritable destination exits 2 naming the path);

and, per case, every file present before the first invocation (the copied results and the damaged files the case
planted) is still there with the same sha256.

Cases are deterministic in (seed, index), so one failing case reruns alone::

    .venv/bin/python -m tests.fuzz_cli --n 1000 --seed 0          # summary table by kind, first failure of each
    .venv/bin/python -m tests.fuzz_cli --seed 0 --case 17 --keep   # rerun one case, keep its scratch folder

Trials are kept tiny (``--max-steps 3``, ``--trials 1 --studies 1``, and a ``--max-seconds`` guard whenever a
step budget is deliberately huge); children get a 6 GiB address-space limit so that a plan of 2^70 trials fails
instead of eating the machine's memory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Arg = str | bytes
TIMEOUT_S = 60.0
MEMORY_LIMIT = 6 << 30  # bytes of address space per child (torch needs ~1.5 GiB of mappings)
RESULTS = "results"  # the default results directory, relative to the scratch folder (the child's cwd)
DATA = "data"  # $OPTBENCH_DATA of the child
PRISTINE_RUN = ("run", "-w", "linreg", "-s", "adamw", "-s", "sgd", "--seed", "0", "--seed", "1", "--max-steps", "20",
                "--quiet")

# ------------------------------------------------------------------------------------------------ value pools

TWO63 = str(2**63)
HUGE_INTS = [TWO63, str(2**64), str(2**70), str(-(2**63) - 1), str(10**30), "9" * 400]
BAD_NUMBERS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e309", "-1", "0", "-0", "0.0",
               "1e-320", "abc", "", " ", "[1]", "{}", "null", "true", "1.5", "0x10", "1_000", "\u0661\u0662",
               "[bold]", "$x$", "1e30", *HUGE_INTS]
BAD_JSON_VALUES = ["abc", "nan", "NaN", "Infinity", "-Infinity", "[1]", "[]", "{}", "null", "true", "false", "1e30",
                   "1e400", "-1", "0", "1.5", '"3"', "[bold]", "$x$", TWO63, str(2**70), '{"a": [1]}', ""]
MARKUP = ["[/bold]", "[bold]", "[/]", "[red]x[/blue]", "[link=file:///etc]x", "$x$", "$x^$", "$\\frac{1}{0}$",
          "$\\undefinedmacro$", "$", "a$b", "[bold]$x^$[/bold]", "\\[/bold]", "[", "]"]
NON_UTF8 = [b"\xff", b"\xfe\xff", b"a\x80b", b"\xc3\x28", b"\xed\xa0\x80", b"caf\xe9", b"\xff[/bold]"]
NUMERIC_TRIAL_OPTIONS = ["--max-steps", "--max-seconds", "--eval-every", "--batch-size", "--timeout",
                         "--warmup-steps"]
SUBMISSIONS = ["adamw", "sgd"]


def deep_json(rng: random.Random, depth: int | None = None) -> str:
    """JSON nested far beyond Python's recursion limit (lists or objects)."""
    depth = depth or rng.choice([2000, 20000, 60000])
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# ------------------------------------------------------------------------------------------------------ cases


@dataclass
class Step:
    """One invocation: ``optbench ARGV`` and what must hold for it beyond the universal checks."""

    argv: list[Arg]
    expect_rc: int | None = None
    expect_text: str | None = None  # must appear in stdout+stderr (e.g. the unwritable path)


@dataclass
class Case:
    """Files to plant in the scratch folder, then the invocations, in order."""

    kind: str
    steps: list[Step]
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    index: int = -1


def _run_argv(rng: random.Random, *extra: Arg, steps: str = "3") -> list[Arg]:
    """A tiny linreg run; ``extra`` comes last so that it overrides the safe defaults."""
    quiet = ["--quiet"] if rng.random() < 0.5 else []
    return ["run", "-w", "linreg", "-s", rng.choice(SUBMISSIONS), "--max-steps", steps, *quiet, *extra]


def _tune_argv(rng: random.Random, *extra: Arg) -> list[Arg]:
    quiet = ["--quiet"] if rng.random() < 0.5 else []
    return ["tune", "-w", "linreg", "-s", rng.choice(SUBMISSIONS), "--trials", "1", "--studies", "1", "--max-steps",
            "3", *quiet, *extra]


def _guard(argv: list[Arg]) -> list[Arg]:
    """A wall-clock guard for a run whose step budget is deliberately huge (a correct harness may accept it)."""
    return [*argv, "--max-seconds", "1"]


def gen_huge_numbers(rng: random.Random) -> Case:
    """Issue 8 (1): numbers the store (int64) or torch cannot hold, and plans too big to build."""
    big = rng.choice(HUGE_INTS)
    choices: list[Callable[[], list[Arg]]] = [
        lambda: _run_argv(rng, "--seed", big),
        lambda: _run_argv(rng, "--seed", "1", "--seed", big),
        lambda: _guard(_run_argv(rng, "--max-steps", big)),
        lambda: _run_argv(rng, "--batch-size", big),
        lambda: _run_argv(rng, "--eval-every", big),
        lambda: _guard(_run_argv(rng, "--warmup-steps", big)),
        lambda: _run_argv(rng, "--timeout", rng.choice(["1e308", "1e309", big])),
        lambda: _run_argv(rng, "--max-seconds", rng.choice(["1e308", big])),
        lambda: _run_argv(rng, "-o", f"batch_size={rng.choice(['1e30', big, '1e308', '-' + big])}"),
        lambda: _run_argv(rng, "-o", f"lr={rng.choice(['1e400', '-1e400', big])}"),
        lambda: _tune_argv(rng, "--trials", rng.choice([str(2**70), big, str(10**12)])),
        lambda: _tune_argv(rng, "--studies", rng.choice(["1000000000", str(2**70), big])),
        lambda: _tune_argv(rng, "--seed", big),
        lambda: _tune_argv(rng, "--jobs", rng.choice([big, "1000000"])),
        lambda: _tune_argv(rng, "--budget-multiplier", rng.choice(["1e308", "1e309", big])),
        lambda: _guard(_tune_argv(rng, "--max-steps", big)),
        lambda: ["score", "--r-max", rng.choice(["1e308", "1e309", big])],
        lambda: ["report", "--out", "rep", "--r-max", rng.choice(["1e308", big])],
        lambda: ["data", "prepare", "cifar10", "--tokens", big, "--mirror", "http://127.0.0.1:9"],
        lambda: ["data", "prepare", "c4", "--vocab-size", big, "--mirror", "http://127.0.0.1:9"],
    ]
    return Case("huge_numbers", [Step(rng.choice(choices)())])


def gen_unchecked_values(rng: random.Random) -> Case:
    """Issue 8 (2): values the harness consumes (batch_size, budgets, timeouts) that nothing checked."""
    value = rng.choice(BAD_JSON_VALUES)
    option = rng.choice(NUMERIC_TRIAL_OPTIONS)
    bad = rng.choice(BAD_NUMBERS)
    ops: list[tuple[Any, ...]] = []
    r = rng.random()
    if r < 0.3:
        argv = _run_argv(rng, "-o", f"batch_size={value}")
    elif r < 0.45:
        literal = value if _is_json(value) else json.dumps(value)  # NaN / Infinity stay bare, as Python writes them
        ops.append(("write", "hp.json", ('{"batch_size": ' + literal + "}").encode()))
        argv = _run_argv(rng, "--hparams", "hp.json")
    elif r < 0.55:
        key = rng.choice(["lr", "schedule", "warmup_frac", "weight_decay", "beta1", "betas", "momentum"])
        argv = _run_argv(rng, "-o", f"{key}={value}")
    elif r < 0.8:
        if option == "--max-steps":
            argv = _guard(_run_argv(rng, option, bad))
        else:
            argv = _run_argv(rng, option, bad)
        if rng.random() < 0.3:
            argv = _tune_argv(rng, option, bad) if option != "--max-steps" else _guard(_tune_argv(rng, option, bad))
    else:
        opt = rng.choice(["--trials", "--studies", "--jobs", "--budget-multiplier", "--seed"])
        argv = rng.choice([_tune_argv(rng, opt, bad), ["score", "--r-max", bad], ["report", "--out", "rep",
                                                                               "--r-max", bad]])
    return Case("unchecked_values", [Step(argv)], ops)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def gen_deep_json(rng: random.Random) -> Case:
    """Issue 8 (3): JSON nested past the recursion limit in every JSON input."""
    text = deep_json(rng)
    r = rng.random()
    if r < 0.3:
        return Case("deep_json", [Step(_run_argv(rng, "--hparams", "deep.json"))], [("write", "deep.json",
                                                                                     text.encode())])
    if r < 0.5:
        wrapped = '{"lr": ' + text + "}"
        return Case("deep_json", [Step(_run_argv(rng, "--hparams", "deep.json"))], [("write", "deep.json",
                                                                                     wrapped.encode())])
    if r < 0.75:
        payload = text if rng.random() < 0.5 else '{"lr": {"feasible_points": ' + text + "}}"
        return Case("deep_json", [Step(_tune_argv(rng, "--search-space", "deep.json"))],
                    [("write", "deep.json", payload.encode())])
    if r < 0.85:  # -o: argv strings are capped at 128 KiB each
        return Case("deep_json", [Step(_run_argv(rng, "-o", "lr=" + deep_json(rng, 20000)))])
    if r < 0.93:
        return Case("deep_json", [Step(["data", "list"]), Step(["run", "-w", "cifar10", "--max-steps", "3"])],
                    [("write", f"{DATA}/cifar10/manifest.json", text.encode())])
    return Case("deep_json", [Step(["score"]), Step(["report", "--out", "rep"])],
                [("parquet_meta", 0, f"{RESULTS}/x/deep.parquet", text.encode())])


def gen_unwritable(rng: random.Random) -> Case:
    """Issue 8 (4): destinations below a regular file, or a file where a directory goes: exit 2 naming the path."""
    where = rng.choice(["blocker/sub", "blocker", "blocker/a/b"])
    ops: list[tuple[Any, ...]] = [("write", "blocker", b"a regular file\n")]
    r = rng.random()
    if r < 0.3:
        argv = _run_argv(rng, "--results-dir", where)
    elif r < 0.5:
        argv = _tune_argv(rng, "--results-dir", where)
    elif r < 0.7:
        argv = ["report", "--out", where]
    elif r < 0.85:
        ops += _algoperf_tree(rng, root="ap", clean=True)
        argv = ["import", "algoperf", "ap", "--results-dir", where]
    else:  # a file named like the trial's results folder inside a writable results dir
        ops += [("write", "inway/linreg-tiny", b"in the way\n")]
        argv = _run_argv(rng, "--results-dir", "inway")
        return Case("unwritable", [Step(argv, expect_rc=2)], ops)
    return Case("unwritable", [Step(argv, expect_rc=2, expect_text=where)], ops)


_PLUGIN = """\
import torch
from optbench.api import SubmissionSpec


class Opt(torch.optim.SGD):
    def __init__(self, params, lr=0.01):
        super().__init__(params, lr=lr)


spec = SubmissionSpec(name={name!r}, defaults={{"lr": 0.01}},
                      factory=lambda model, hp, info: torch.optim.SGD(model.parameters(), lr=hp["lr"]))
"""


def gen_markup(rng: random.Random) -> Case:
    """Issue 8 (5): rich markup and mathtext in plugin paths and names, studies and hparam values, end to end."""
    mark = rng.choice(MARKUP)
    ops: list[tuple[Any, ...]] = []
    r = rng.random()
    if r < 0.35:
        path = f"plug{mark}x.py"
        ops.append(("write", path, _PLUGIN.format(name=f"sub{mark}").encode()))
        sub = f"{path}:{rng.choice(['spec', 'Opt'])}"
        first = _run_argv(rng, "--study", rng.choice(MARKUP))
        first[first.index("-s") + 1] = sub
    elif r < 0.55:
        first = _run_argv(rng, "--study", mark)
    elif r < 0.75:
        first = _run_argv(rng, "-o", f"{rng.choice(['schedule', 'lr', 'nosuch'])}={mark}")
    else:
        first = rng.choice([
            ["run", "-w", mark], _run_argv(rng, "-s", mark), _run_argv(rng, "--size", mark),
            _run_argv(rng, "--device", mark), ["check-plugin", mark], ["data", "prepare", mark],
            ["score", "--reference", mark], ["score", "--sensitivity", mark], ["report", "--out", "rep", "--hparam",
                                                                               mark],
            ["import", "algoperf", mark], _run_argv(rng, "-s", f"{mark}.py:X"), _run_argv(rng, "-w", f"{mark}:X"),
        ])
    fmt = rng.choice(["table", "markdown", "latex", "csv", "json"])
    then = rng.choice([  # one reader of what the run wrote (each costs a few seconds)
        Step(["score", "--format", fmt]), Step(["report", "--out", "rep", "--hparam", rng.choice(["lr", mark])]),
        Step(["score", "--sensitivity", "lr", "--format", fmt])])
    return Case("markup", [Step(first), then], ops)


_DAMAGE_META = [  # (field, value) for wrong field types in a copied result's metadata
    ("schema_version", "1"), ("schema_version", None), ("seed", "abc"), ("seed", 2**70), ("target", [1]),
    ("target", "x"), ("workload", 5), ("workload", None), ("size", ["a"]), ("submission", {"a": 1}),
    ("study", None), ("trial", 1.5), ("outcome", "[bold]"), ("time_to_target", "soon"), ("best_metric", "nan"),
    ("metric_goal", "sideways"), ("hparams", "{not json"), ("hparams", "[1]"), ("total_timed_seconds", [1]),
    ("steps_to_target", -1), ("metric_name", "$x^$"), ("submission", "[/bold]"), ("created_at", 12),
]


def gen_damaged_results(rng: random.Random) -> Case:
    """Issue 8 (6): foreign or damaged files in the results dir and damaged dataset manifests."""
    ops: list[tuple[Any, ...]] = []
    for _ in range(rng.randint(1, 3)):
        n = rng.randrange(4)
        name = f"{RESULTS}/{rng.choice(['linreg-tiny/adamw', 'x', 'linreg-tiny/sgd', 'deep/a/b'])}/f{rng.randrange(99)}"
        r = rng.random()
        if r < 0.15:
            ops.append(("parquet_meta", n, name + ".parquet", rng.choice(
                [b"[1, 2]", b"null", b"3", b'"x"', b"{", b"\xff\xfe", b"[]", b'{"schema_version": 1}'])))
        elif r < 0.4:
            key, val = rng.choice(_DAMAGE_META)
            ops.append(("parquet_field", n, name + ".parquet", key, val))
        elif r < 0.5:
            ops.append(("parquet_column", n, name + ".parquet", rng.choice(
                ["step", "metric_value", "timed_seconds", "seed", "target", "run_id"]), rng.choice(["str", "null",
                                                                                                   "drop"])))
        elif r < 0.6:
            ops.append(("write", name + ".parquet", rng.choice([b"", b"PAR1", b"PAR1garbagePAR1",
                                                               bytes(rng.randrange(256) for _ in range(200))])))
        elif r < 0.7:
            ops.append(("mkdir", name + ".parquet"))
        elif r < 0.8:
            ops.append(("copy", n, name + ".parquet"))  # a duplicate run_id
        elif r < 0.87:
            ops.append(("truncate", n, name + ".parquet"))
        elif r < 0.93:
            ops.append(("symlink", name + ".parquet", rng.choice(["/nonexistent", name + ".parquet"])))
        else:
            ops.append(("write", name + ".parquet.tmp", b"junk"))
    if rng.random() < 0.4:
        ds = rng.choice(["cifar10", "wikitext103", "c4"])
        content = rng.choice([b"{", b"[1]", b"null", b"\xff\xfe", b'{"version": "1"}', b'{"version": 1, "files": 3}',
                              b'{"version": 1, "kind": "images", "counts": "x", "files": {}}',
                              b'{"version": 1, "splits": [1], "downloads": [{"file": 1}], "files": []}',
                              b'{"version": 1, "files": {"a": "b"}, "downloads": "x"}', b""])
        ops.append(("mkdir", f"{DATA}/{ds}/manifest.json") if rng.random() < 0.1 else
                   ("write", f"{DATA}/{ds}/manifest.json", content))
    by = rng.choice(["time", "steps", "examples", "tokens"])
    steps = rng.sample([
        Step(["score", "--by", by]), Step(["score", "--format", rng.choice(["json", "csv", "latex"])]),
        Step(["score", "--ci"]), Step(["score", "--sensitivity", "lr"]), Step(["score", "--algoperf"]),
        Step(["report", "--out", "rep"]), Step(["data", "list"]),
        Step(["run", "-w", rng.choice(["cifar10", "wikitext", "c4"]), "--max-steps", "3", "--quiet"]),
        Step(_tune_argv(rng)),
    ], k=rng.choice([1, 1, 2]))
    return Case("damaged_results", steps, ops)


def gen_non_utf8(rng: random.Random) -> Case:
    """Issue 8 (7): bytes that are not UTF-8 in every text option, passed raw through argv."""
    b = rng.choice(NON_UTF8)
    ops: list[tuple[Any, ...]] = []
    r = rng.random()
    if r < 0.2:
        argv = _run_argv(rng, "--study", b)
    elif r < 0.35:
        argv = _run_argv(rng, "-s", b + b".py:X")
        if rng.random() < 0.5:
            ops.append(("write", b"p" + b + b".py", _PLUGIN.format(name="p").encode()))
            argv = _run_argv(rng, "-s", b"p" + b + b".py:spec")
    elif r < 0.5:
        ops += _algoperf_tree(rng, root="ap", clean=True)
        argv = ["import", "algoperf", "ap", "--submission", b]
    elif r < 0.6:
        ops += _algoperf_tree(rng, root=b"ap" + b, clean=True)
        argv = ["import", "algoperf", b"ap" + b]
    else:
        argv = rng.choice([
            ["run", "-w", b], _run_argv(rng, "--size", b), _run_argv(rng, "-o", b"lr=" + b), _run_argv(rng, "-o",
                                                                                                     b + b"=1"),
            _run_argv(rng, "--results-dir", b"r" + b), _run_argv(rng, "--device", b), ["check-plugin", b],
            ["score", "--reference", b], ["score", "--sensitivity", b], ["data", "prepare", b],
            ["data", "list", "--data-dir", b"d" + b], ["report", "--out", b"rep" + b], _run_argv(rng, "--hparams", b),
            _tune_argv(rng, "--search-space", b), ["import", "algoperf", "ap", "--target", b + b"=1"],
        ])
    return Case("non_utf8", [Step(argv)] + ([Step(["score"])] if rng.random() < 0.3 else []), ops)


def _csv_cell(rng: random.Random, good: str) -> str:
    return rng.choice([good] * 4 + ["abc", "nan", "inf", "-inf", "", str(2**70), TWO63, "1e30", "-5", "1.5",
                                    "[bold]", "$x$", "1e400"])


def _algoperf_tree(rng: random.Random, *, root: Arg, clean: bool = False) -> list[tuple[Any, ...]]:
    """An AlgoPerf experiment folder; unless ``clean``, its numbers and JSON side files are damaged."""
    ops: list[tuple[Any, ...]] = []
    r = os.fsencode(root)
    for t in range(rng.randint(1, 3)):
        workload, metric = rng.choice([("criteo1tb", "loss"), ("imagenet_resnet", "accuracy"), ("fastmri", "ssim")])
        fw = rng.choice(["jax", "pytorch"])
        trial = str(t + 1) if clean or rng.random() < 0.7 else rng.choice([str(2**70), "0", "99999999999999999999"])
        study = b"" if rng.random() < 0.5 else b"study_" + (b"1" if clean else rng.choice([b"1", str(2**70).encode()]))
        folder = r + b"/sub/" + (study + b"/" if study else b"") + f"{workload}_{fw}/trial_{trial}".encode()
        header = f"global_step,score,accumulated_submission_time,accumulated_eval_time,total_duration," \
                 f"preemption_count,train/loss,validation/{metric}\n"
        lines = []
        for i in range(rng.randint(1, 4)):
            step, score, val = str(100 * i), str(10.0 * i), str(0.5 + 0.01 * i)
            if not clean:
                step, score, val = _csv_cell(rng, step), _csv_cell(rng, score), _csv_cell(rng, val)
            lines.append(f"{step},{score},{score},1.0,{score},0,0.5,{val}\n")
        ops.append(("write", folder + b"/eval_measurements.csv", (header + "".join(lines)).encode()))
        seed = 7 if clean else rng.choice([2**70, 2**63, -(2**63) - 1, "abc", 1.5, True, None, [1], -1, 10**400])
        meta = json.dumps({"rng_seed": seed, "gpu_model_name": rng.choice(["A100", "[bold]", "$x^$"]),
                           "git_commit_hash": "abc"}) if not isinstance(seed, int) or abs(seed) < 2**200 \
            else '{"rng_seed": ' + str(seed) + "}"
        ops.append(("write", folder + b"/meta_data_0.json", meta.encode()))
        if not clean and rng.random() < 0.5:
            ops.append(("write", folder + b"/hparams.json", rng.choice(
                [deep_json(rng).encode(), b"[1]", b"\xff", b'{"lr": NaN}', b'{"lr": 1e400}', b'{"[bold]": "$x^$"}'])))
    return ops


def gen_algoperf(rng: random.Random) -> Case:
    """Issue 8 (8): ``import algoperf`` over generated logs with non-numeric or huge steps and seeds."""
    ops = _algoperf_tree(rng, root="ap")
    extra: list[Arg] = []
    if rng.random() < 0.3:
        extra += ["--target", rng.choice(["criteo1tb=nan", "criteo1tb=1e400", "=1", "criteo1tb", "x=1",
                                          f"criteo1tb={TWO63}", "criteo1tb=[bold]", "criteo1tb=0.2"])]
    if rng.random() < 0.2:
        extra += ["--submission", rng.choice(["", "[/bold]", "$x^$", "a/b", "..", "/abs"])]
    then = rng.choice([["score", "--algoperf"], ["score", "--by", "steps"], ["score", "--algoperf", "--ci"],
                       ["report", "--out", "rep"]])
    steps = [Step(["import", "algoperf", "ap", *extra]), Step(then)]
    return Case("algoperf", steps, ops)


def gen_unknown_names(rng: random.Random) -> Case:
    """Unknown names and options, empty strings, missing files, paths below a regular file."""
    ops: list[tuple[Any, ...]] = [("write", "blocker", b"x\n"), ("mkdir", "adir")]
    empty = rng.choice(["", " ", "nosuch", "blocker/x", "adir", "torch.optim:Nope", "nosuch.py:X", "os:path",
                        "optbench.api:SubmissionSpec", "builtins:int", ":", "a:", ":b", "-", "--"])
    argv = rng.choice([
        ["run", "-w", empty], _run_argv(rng, "-s", empty), _run_argv(rng, "--size", empty),
        _run_argv(rng, "--device", rng.choice([empty, "cuda", "cuda:99", "mps", "meta", "cpu:1", "auto"])),
        _run_argv(rng, "-o", rng.choice(["", "=1", "lr", "nosuch=1", " =1", "=", "lr==1"])),
        _run_argv(rng, "--hparams", empty), _run_argv(rng, "--data-dir", empty), _run_argv(rng, "--results-dir", empty),
        _tune_argv(rng, "--search-space", empty), _tune_argv(rng, "--ruleset", empty), _tune_argv(rng, "-s", empty),
        ["score", "--by", empty], ["score", "--format", empty], ["score", "--results-dir", empty],
        ["score", "--reference", empty], ["score", "--sensitivity", empty], ["report", "--out", empty],
        ["report", "--hparam", empty], ["check-plugin", empty], ["check-plugin", "adamw", "--skip", empty],
        ["data", "prepare", empty], ["data", "list", "--data-dir", empty], ["import", "algoperf", empty],
        ["import", empty], ["list", empty], [empty], ["run", "--nosuch-option"], ["score", "-x"],
        ["import", "algoperf", "adir", "--rules", empty], ["--results-dir", "x"], ["run", "--seed"],
        ["tune", "--trials"], ["run", "-o"],
    ])
    return Case("unknown_names", [Step(argv)], ops)


_RANDOM_OPTIONS: dict[str, list[str]] = {
    "run": ["-w", "-s", "--size", "-o", "--hparams", "--seed", "--device", "--results-dir", "--data-dir",
            *NUMERIC_TRIAL_OPTIONS, "--study"],
    "tune": ["-w", "-s", "--size", "--search-space", "--trials", "--studies", "--jobs", "--seed", "--ruleset",
             "--budget-multiplier", "--device", "--results-dir", *NUMERIC_TRIAL_OPTIONS],
    "score": ["--by", "--format", "--reference", "--r-max", "--sensitivity", "--results-dir"],
    "report": ["--out", "--by", "--r-max", "--hparam", "--results-dir"],
}
_VALID = {"-w": ["linreg"], "-s": SUBMISSIONS, "--size": ["tiny"], "--device": ["cpu"], "--by": ["time", "steps"],
          "--format": ["table", "json"], "--ruleset": ["external"], "--seed": ["0", "1"], "--out": ["rep"]}


def gen_random_mix(rng: random.Random) -> Case:
    """Several options at once, each valid or drawn from every pool of bad values."""
    command = rng.choice(list(_RANDOM_OPTIONS))
    pool = [*BAD_NUMBERS, *MARKUP, *BAD_JSON_VALUES, "blocker/x", "", "nosuch"]
    chosen = rng.sample(_RANDOM_OPTIONS[command], k=rng.randint(1, 3))
    extra: list[Arg] = []
    for opt in chosen:
        value = rng.choice(_VALID.get(opt, ["1"])) if rng.random() < 0.3 else rng.choice(pool)
        if opt == "-o":
            value = f"{rng.choice(['lr', 'batch_size', 'schedule'])}={value}"
        extra += [opt, value]
    if command == "run":
        argv = _run_argv(rng, *extra)
    elif command == "tune":
        argv = _tune_argv(rng, *extra)
    else:
        argv = [command, *extra]
    if command in ("run", "tune") and "--max-steps" in chosen:  # keep a huge valid budget bounded
        argv = argv if "--max-seconds" in chosen else _guard(argv)
        if "--max-seconds" in chosen:
            argv += ["--max-steps", "3"]
    return Case("random_mix", [Step(argv)], [("write", "blocker", b"x\n")])


KINDS: dict[str, tuple[Callable[[random.Random], Case], float]] = {  # generator, share of the invocations
    "huge_numbers": (gen_huge_numbers, 1.0), "unchecked_values": (gen_unchecked_values, 1.2),
    "deep_json": (gen_deep_json, 0.5), "unwritable": (gen_unwritable, 0.5), "markup": (gen_markup, 0.6),
    "damaged_results": (gen_damaged_results, 0.8), "non_utf8": (gen_non_utf8, 0.8), "algoperf": (gen_algoperf, 0.6),
    "unknown_names": (gen_unknown_names, 1.4), "random_mix": (gen_random_mix, 1.2),
}


def make_case(seed: int, index: int, kinds: Sequence[str] | None = None) -> Case:
    """Case ``index`` of the stream for ``seed``: the same on every machine and independent of the other cases."""
    rng = random.Random(f"optbench-fuzz:{seed}:{index}")
    names = list(kinds or KINDS)
    kind = rng.choices(names, weights=[KINDS[k][1] for k in names])[0]
    case = KINDS[kind][0](rng)
    case.index = index
    return case


# ------------------------------------------------------------------------------------------------- scratch dirs


def _b(path: Arg) -> bytes:
    return os.fsencode(path)


def make_pristine(folder: Path) -> list[Path]:
    """Real trials of ``optbench run -w linreg`` under ``folder/results``; returns their paths, sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([*optbench_command(), *PRISTINE_RUN], cwd=folder, env=child_env(folder),
                          capture_output=True, timeout=600)
    files = sorted((folder / RESULTS).rglob("*.parquet"))
    if proc.returncode != 0 or not files:
        raise RuntimeError(f"could not make the pre-populated results (exit {proc.returncode}):\n"
                           f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
    return files


def _parquet_with(src: Path, dst: bytes, *, meta: bytes | None = None, field_: tuple[str, Any] | None = None,
                  column: tuple[str, str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if field_ is not None:
        raw = json.loads(table.schema.metadata[b"optbench"])
        raw[field_[0]] = field_[1]
        meta = json.dumps(raw).encode()
    if column is not None:
        name, how = column
        i = table.column_names.index(name)
        if how == "drop":
            table = table.remove_column(i)
        else:
            values = [f"s{v}" for v in table.column(i).to_pylist()] if how == "str" else [None] * table.num_rows
            table = table.set_column(i, name, pa.array(values, type=pa.string() if how == "str" else pa.null()))
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"optbench": meta})
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    pq.write_table(table, dst.decode("utf-8", "surrogateescape"))


def apply_ops(scratch: Path, ops: Sequence[tuple[Any, ...]], pristine: Sequence[Path]) -> None:
    """Plant a case's files in ``scratch`` (paths relative to it, str or bytes)."""
    base = _b(scratch)
    for op in ops:
        try:
            _apply(base, op, pristine)
        except OSError:  # two ops of one case that collide (a file where the other wants a folder): skip the later
            continue


def _apply(base: bytes, op: tuple[Any, ...], pristine: Sequence[Path]) -> None:
    """One planted file: ``write``/``mkdir``/``symlink`` a path, or derive one from pristine result ``op[1]``."""
    what, target = op[0], base + b"/" + _b(op[1] if op[0] in ("write", "mkdir", "symlink") else op[2])
    if os.path.lexists(target) and what != "mkdir":
        return  # an earlier op of the case planted it
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if what == "write":
        with open(target, "wb") as f:
            f.write(op[2])
    elif what == "mkdir":
        os.makedirs(target, exist_ok=True)
    elif what == "symlink":
        os.symlink(_b(op[2]) if op[2].startswith("/") else base + b"/" + _b(op[2]), target)
    else:
        src = pristine[op[1] % len(pristine)]
        if what == "copy":
            shutil.copyfile(src, target)
        elif what == "truncate":
            data = src.read_bytes()
            Path(os.fsdecode(target)).write_bytes(data[: len(data) // 2])
        elif what == "parquet_meta":
            _parquet_with(src, target, meta=op[3])
        elif what == "parquet_field":
            _parquet_with(src, target, field_=(op[3], op[4]))
        elif what == "parquet_column":
            _parquet_with(src, target, column=(op[3], op[4]))
        else:
            raise ValueError(f"unknown op {what!r}")


def snapshot(scratch: Path) -> dict[bytes, str]:
    """sha256 of every regular file below ``scratch`` (the pre-existing results and inputs of a case)."""
    out: dict[bytes, str] = {}
    for dirpath, _dirs, files in os.walk(_b(scratch)):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, _b(scratch))] = hashlib.sha256(Path(os.fsdecode(p)).read_bytes()).hexdigest()
    return out


def child_env(scratch: Path) -> dict[str, str]:
    """The environment of every invocation: default results under the scratch folder, its own data and home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTBENCH_") and k not in ("COLUMNS", "LINES")}
    home = scratch / ".home"
    env.update(OPTBENCH_DATA=str(scratch / DATA), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               MPLCONFIGDIR=str(home / ".mpl"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TERM="dumb",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def optbench_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m optbench.cli``."""
    script = Path(sys.executable).with_name("optbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "optbench.cli"]


def _limit_memory() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass
class Outcome:
    """What one case did: a line per failed check, and the exit code and output of each invocation."""

    case: Case
    failures: list[str]
    runs: list[tuple[int | None, bytes, bytes, float]]

    @property
    def categories(self) -> set[str]:
        return {f.split(":", 1)[0] for f in self.failures}


def run_step(step: Step, scratch: Path, timeout: float) -> tuple[int | None, bytes, bytes, float]:
    """One invocation in its own process group; (exit code or None on a hang, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([*optbench_command(), *step.argv], cwd=scratch, env=child_env(scratch),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_limit_memory)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    try:  # tune workers left behind by a killed or crashed parent
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return rc, out, err, time.monotonic() - t0


def check_step(step: Step, rc: int | None, out: bytes, err: bytes) -> list[str]:
    """The universal checks and the step's own expectations, as failure lines ``category: detail``."""
    fails = []
    if rc is None:
        return ["hang: no exit within the timeout"]
    if b"Traceback" in out or b"Traceback" in err:
        last = [ln for ln in (err or out).decode(errors="replace").strip().splitlines() if ln.strip()]
        fails.append(f"traceback: {last[-1] if last else '?'}")
    if rc not in (0, 1, 2):
        fails.append(f"exit_code: {rc}")
    if step.expect_rc is not None and rc != step.expect_rc:
        fails.append(f"expectation: exit {rc}, expected {step.expect_rc}")
    if step.expect_text is not None and step.expect_text.encode() not in out + err:
        fails.append(f"expectation: {step.expect_text!r} not in the message")
    return fails


def run_case(case: Case, pristine_dir: Path, pristine: Sequence[Path], *, timeout: float = TIMEOUT_S,
             keep: bool = False, work: Path | None = None) -> Outcome:
    """Set up a scratch folder (a copy of the pre-populated results plus the case's files), run every step, check."""
    scratch = Path(tempfile.mkdtemp(prefix=f"case{case.index}-", dir=work))
    try:
        shutil.copytree(pristine_dir / RESULTS, scratch / RESULTS, symlinks=True)
        rel = [scratch / p.relative_to(pristine_dir) for p in pristine]
        try:
            apply_ops(scratch, case.ops, rel)
        except Exception as exc:  # a bug of this harness must not end the run: report it as the case's failure
            return Outcome(case, [f"harness: setting up failed: {type(exc).__name__}: {exc}"], [])
        before = snapshot(scratch)
        failures: list[str] = []
        runs = []
        for i, step in enumerate(case.steps):
            rc, out, err, secs = run_step(step, scratch, timeout)
            runs.append((rc, out, err, secs))
            failures += [f"{f} (step {i + 1})" for f in check_step(step, rc, out, err)]
        after = snapshot(scratch)
        for path, digest in before.items():
            if path not in after:
                failures.append(f"lost: {os.fsdecode(path)}")
            elif after[path] != digest:
                failures.append(f"changed: {os.fsdecode(path)}")
        return Outcome(case, failures, runs)
    finally:
        if keep:
            print(f"scratch folder kept: {scratch}")
        else:
            _rmtree(scratch)


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(p), 0o700)
        func(p)

    shutil.rmtree(path, onerror=onerror)


# ---------------------------------------------------------------------------------------------------- reporting


def shell_line(argv: Sequence[Arg]) -> str:
    """``optbench ARGV`` as bash, with non-UTF-8 bytes in ``$'...'`` quoting."""
    parts = []
    for a in argv:
        if isinstance(a, bytes):
            try:
                a = a.decode("utf-8")
            except UnicodeDecodeError:
                parts.append("$'" + "".join(chr(c) if 32 <= c < 127 and chr(c) not in "'\\" else f"\\x{c:02x}"
                                            for c in a) + "'")
                continue
        parts.append(shlex.quote(a) if len(a) < 200 else shlex.quote(a[:60]) + f"...({len(a)} chars)")
    return "optbench " + " ".join(parts)


def describe(outcome: Outcome, seed: int) -> str:
    """A failing case: its failures, its commands, its planted files, and the command that reruns it alone."""
    c = outcome.case
    lines = [f"case {c.index} ({c.kind}): rerun with `.venv/bin/python -m tests.fuzz_cli --seed {seed} "
             f"--case {c.index} --keep`"]
    lines += [f"  failure  {f}" for f in outcome.failures]
    for step, (rc, _out, err, secs) in zip(c.steps, outcome.runs, strict=False):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err.strip() else []
        lines.append(f"  $ {shell_line(step.argv)}    -> exit {rc} in {secs:.1f}s {tail[0][:160] if tail else ''}")
    for op in c.ops:
        shown = [x if not isinstance(x, bytes) or len(x) < 80 else x[:40] + b"...%d bytes" % len(x) for x in op]
        lines.append(f"  planted  {shown}")
    return "\n".join(lines)


COLUMNS = ("traceback", "exit_code", "hang", "lost", "changed", "expectation", "harness")


def summarize(outcomes: Sequence[Outcome], seed: int) -> str:
    """The table by kind (invocations and each failure category) and the first failing case of each kind."""
    by_kind: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_kind.setdefault(o.case.kind, []).append(o)
    header = (f"{'kind':<18}{'cases':>6}{'invoc.':>7}" + "".join(f"{c:>12}" for c in COLUMNS)
              + f"{'failing':>9}{'secs':>7}")
    rows = [header, "-" * len(header)]
    total = {c: 0 for c in (*COLUMNS, "cases", "inv", "failing")}
    for kind in sorted(by_kind):
        group = by_kind[kind]
        counts = {c: sum(sum(1 for f in o.failures if f.startswith(c + ":")) for o in group) for c in COLUMNS}
        inv, failing = sum(len(o.runs) for o in group), sum(1 for o in group if o.failures)
        secs = sum(r[3] for o in group for r in o.runs)
        rows.append(f"{kind:<18}{len(group):>6}{inv:>7}" + "".join(f"{counts[c]:>12}" for c in COLUMNS)
                    + f"{failing:>9}{secs:>7.0f}")
        for c in COLUMNS:
            total[c] += counts[c]
        total["cases"] += len(group)
        total["inv"] += inv
        total["failing"] += failing
    rows.append("-" * len(header))
    rows.append(f"{'total':<18}{total['cases']:>6}{total['inv']:>7}" + "".join(f"{total[c]:>12}" for c in COLUMNS)
                + f"{total['failing']:>9}")
    firsts = [describe(group[[bool(o.failures) for o in group].index(True)], seed)
              for kind, group in sorted(by_kind.items()) if any(o.failures for o in group)]
    return "\n".join(rows) + ("\n\nfirst failing case of each kind:\n" + "\n\n".join(firsts) if firsts else "")


def fuzz(n: int, seed: int, *, jobs: int = 2, timeout: float = TIMEOUT_S, kinds: Sequence[str] | None = None,
         indices: Sequence[int] | None = None, keep: bool = False, progress: bool = False,
         select: Callable[[Case], bool] | None = None, budget_s: float | None = None) -> list[Outcome]:
    """Generate cases ``0..n-1`` (or ``indices``) of ``seed``, run them ``jobs`` at a time, return the outcomes.

    ``select`` keeps only some cases; ``budget_s`` stops starting new cases after that many seconds (the table then
    covers the cases that ran).
    """
    cases = [make_case(seed, i, kinds) for i in (indices if indices is not None else range(n))]
    if select is not None:
        cases = [c for c in cases if select(c)]
    work = Path(tempfile.mkdtemp(prefix="optbench-fuzz-"))
    t0 = time.monotonic()
    try:
        pristine_dir = work / "pristine"
        pristine = make_pristine(pristine_dir)
        outcomes: list[Outcome] = []
        pending = iter(cases)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            running: set[concurrent.futures.Future[Outcome]] = set()
            while True:
                while len(running) < jobs and (budget_s is None or time.monotonic() - t0 < budget_s):
                    case = next(pending, None)
                    if case is None:
                        break
                    running.add(pool.submit(run_case, case, pristine_dir, pristine, timeout=timeout, keep=keep,
                                            work=work))
                if not running:
                    break
                done, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    outcomes.append(fut.result())
                    if progress and outcomes[-1].failures:
                        print(describe(outcomes[-1], seed), file=sys.stderr, flush=True)
                    if progress and len(outcomes) % 25 == 0:
                        bad = sum(1 for o in outcomes if o.failures)
                        print(f"  {len(outcomes)}/{len(cases)} cases, {bad} failing, "
                              f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        return sorted(outcomes, key=lambda o: o.case.index)
    finally:
        if not keep:
            _rmtree(work)


def fails_at_parse(argv: Sequence[Arg]) -> bool:
    """Whether click itself rejects ``optbench ARGV`` (checked in-process, cheaply: nothing runs)."""
    import contextlib
    import io

    import click

    from optbench.cli import main as cli_main

    cmd: click.Command = cli_main
    args, parent, name = [os.fsdecode(a) for a in argv], None, "optbench"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            while True:
                ctx = cmd.make_context(name, args, parent=parent)
                if not isinstance(cmd, click.Group):
                    return False
                rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
                if not rest:
                    return False
                found, sub, args = cmd.resolve_command(ctx, rest)
                if sub is None:
                    return True
                cmd, parent, name = sub, ctx, found or ""
    except (click.exceptions.ClickException, click.exceptions.Exit):
        return True


def quick(case: Case) -> bool:
    """A case that costs well under a second: click rejects every one of its invocations."""
    return all(fails_at_parse(step.argv) for step in case.steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="cases to generate (0..n-1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, action="append", help="run only this case index (repeatable)")
    parser.add_argument("--kind", action="append", choices=sorted(KINDS), help="only these kinds (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="cases at a time (the machine has 2 cores)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per invocation")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    parser.add_argument("--all-failures", action="store_true", help="describe every failing case, not the first")
    parser.add_argument("--list", action="store_true", help="print the cases' commands without running them")
    parser.add_argument("--budget", type=float, default=None, help="stop starting cases after this many seconds")
    parser.add_argument("--quick", action="store_true", help="only cases click rejects at parsing (fast)")
    args = parser.parse_args(argv)
    if args.list:
        for i in args.case or range(args.n):
            c = make_case(args.seed, i, args.kind)
            print(f"{i:5d} {c.kind:<17} " + " && ".join(shell_line(s.argv) for s in c.steps))
        return 0
    t0 = time.monotonic()
    outcomes = fuzz(args.n, args.seed, jobs=args.jobs, timeout=args.timeout, kinds=args.kind, indices=args.case,
                    keep=args.keep, progress=True, budget_s=args.budget, select=quick if args.quick else None)
    print(summarize(outcomes, args.seed))
    if args.all_failures:
        print("\nall failing cases:\n" + "\n\n".join(describe(o, args.seed) for o in outcomes if o.failures))
    print(f"\n{len(outcomes)} cases in {time.monotonic() - t0:.0f} s")
    return 1 if any(o.failures for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
