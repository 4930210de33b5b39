"""The model-size ladder (optbench_workloads.ladder), --model/--tokens (optbench.engine.prepared) and the device
memory plan (optbench.plugins.memory): counts against the built models, budgets in steps, plans within budget, and
one tiny-ladder trial end to end on a generated corpus, its model recorded in Parquet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.engine import prepared
from optbench.engine.prepared import TrialConfig, prepare
from optbench.errors import UsageError
from optbench.plugins import memory
from optbench.plugins.registry import load_submission, load_workload
from optbench_workloads import ladder
from optbench_workloads._gpt import GPT, build_gpt, count_params
from optbench_workloads.lm import gpt_config
from tests.workloads.test_lm import markov_corpus, write_tokens

GIB = 1 << 30


def meta_model(r: ladder.Rung) -> GPT:
    """The rung's decoder with no storage (a 1.2B model costs nothing on the meta device)."""
    with torch.device("meta"):
        return GPT(gpt_config(r.options(), r.vocab))


def test_gpt2_small_is_exact() -> None:
    r = ladder.LADDER["124m"]
    assert (r.n_layer, r.d_model, r.n_head, r.seq_len, r.vocab, r.tie, r.bias) == (12, 768, 12, 1024, 50257, True,
                                                                                      True)
    assert ladder.param_counts(r.options(), r.vocab) == (124_439_808, 85_056_000)
    assert count_params(meta_model(r)) == 124_439_808


@pytest.mark.parametrize("name", list(ladder.LADDER))
def test_each_rung_counts_as_its_model(name: str) -> None:
    r = ladder.LADDER[name]
    model = meta_model(r)
    total, core = ladder.param_counts(r.options(), r.vocab)
    vocab_mats = {"embed.weight", "pos_embed.weight", "lm_head.weight"}
    assert count_params(model) == total
    assert sum(p.numel() for n, p in model.named_parameters() if n not in vocab_mats) == core
    shapes = sorted(p.shape for p in ladder.param_shapes(r.options(), r.vocab))
    assert shapes == sorted(tuple(p.shape) for p in model.parameters())


def test_the_ladder_spans_the_papers_sizes() -> None:
    core = {n: ladder.param_counts(r.options(), r.vocab)[1] / 1e6 for n, r in ladder.LADDER.items()}
    total = {n: ladder.param_counts(r.options(), r.vocab)[0] / 1e6 for n, r in ladder.LADDER.items()}
    for name, want in (("150m", 151), ("300m", 302), ("600m", 604), ("1.2b", 1208)):  # CBS: non-embedding
        assert core[name] == pytest.approx(want, rel=0.01)
    assert total["660m"] == pytest.approx(660, rel=0.01) and total["210m"] == pytest.approx(210, rel=0.01)
    assert 0.04 < core["t1"] < core["t2"] < core["t3"] < core["t4"] < 2.0  # the tiny CPU ladder
    assert all(r.batch_size * r.seq_len == r.batch_tokens for r in ladder.RUNGS)


def _prep(tmp_path: Path, **kw: object) -> prepared.PreparedTrial:
    cfg = TrialConfig(size="tiny", device="cpu", **kw)  # type: ignore[arg-type]
    return prepare(load_workload("wikitext"), load_submission("adamw"), cfg, results_dir=tmp_path)


def test_tokens_become_steps(tmp_path: Path) -> None:
    r = ladder.LADDER["t2"]
    total = json.loads(_prep(tmp_path, model="t2").model_config)["params_total"]
    want = math.ceil(20 * total / (r.batch_size * r.seq_len))  # 1x Chinchilla, all parameters
    prep = _prep(tmp_path, model="t2")
    assert prep.size.name == "tiny+t2" and prep.budget.max_steps == prep.info.step_hint == want
    assert prep.budget.max_seconds is None and prep.tokens == 20 * total and prep.target_kind == "provisional"
    assert _prep(tmp_path, model="t2", tokens="0.5x").budget.max_steps == math.ceil(10 * total / 1024)
    assert _prep(tmp_path, model="t2", tokens="5000", batch_size=8).budget.max_steps == math.ceil(5000 / (8 * 64))
    assert _prep(tmp_path, tokens="2048").budget.max_steps == 2  # a count on a tier: 16 x 64 tokens per step
    assert _prep(tmp_path, model="t2", max_steps=7).budget.max_steps == 7


@pytest.mark.parametrize(("kw", "match"), [
    ({"model": "t2", "tokens": "1x", "max_steps": 3}, "give one of them"),
    ({"tokens": "1x"}, "needs --model"),
    ({"model": "t2", "tokens": "lots"}, "Chinchilla multiple"),
    ({"model": "t2", "tokens": "-1x"}, "--tokens"),
    ({"model": "9t"}, "t1, t2"),
])
def test_bad_model_or_tokens_are_usage_errors(tmp_path: Path, kw: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        _prep(tmp_path, **kw)


def test_target_kinds(tmp_path: Path) -> None:
    assert _prep(tmp_path).target_kind == "provisional"  # the tiny tier's note says PROVISIONAL
    assert _prep(tmp_path, model="t1", target=5.0).target_kind == "user"
    assert _prep(tmp_path, model="t1", full_budget=True).target_kind == "budget"


def _profile(name: str) -> memory.MemoryProfile:
    r = ladder.LADDER[name]
    return ladder.memory_profile(r.options(), r.vocab, autocast=True)


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "soap", "shampoo", "someone-elses"])
def test_the_plan_stays_within_its_budget_and_shrinks_with_it(optimizer: str) -> None:
    prof, micros = _profile("360m"), []
    for gb in (141, 80, 40, 24):
        plan = memory.plan_micro_batch(prof, optimizer=optimizer, share=256, capacity=gb * 10**9)
        assert plan.peak_bytes <= plan.usable_bytes < gb * 10**9
        passes = math.ceil(256 / plan.micro_batch_size)  # and no fewer passes would fit
        assert passes == 1 or memory.peak_bytes(prof, optimizer, math.ceil(256 / (passes - 1))) > plan.usable_bytes
        micros.append(plan.micro_batch_size)
    assert micros == sorted(micros, reverse=True) and micros[-1] < micros[0]
    with pytest.raises(memory.DoesNotFit, match="GiB"):
        memory.plan_micro_batch(prof, optimizer=optimizer, share=256, capacity=4 * 10**9)


def test_the_plan_evens_out_the_passes() -> None:
    prof = _profile("124m")
    room = memory.usable_bytes(80 * 10**9) - memory.fixed_bytes(prof, "adamw") - prof.transient_bytes
    most = room // prof.activation_bytes
    plan = memory.plan_micro_batch(prof, optimizer="adamw", share=most + 1, capacity=80 * 10**9)
    assert plan.micro_batch_size == math.ceil((most + 1) / 2)  # two equal passes, not most + 1 leftover example


def test_state_counts_follow_the_optimizer() -> None:
    prof = _profile("124m")
    p = prof.n_params
    assert memory.state_floats(prof, "adamw") == 2 * p and memory.state_floats(prof, "nope") == 4 * p
    hidden = sum(q.size for q in prof.params if q.role == "matrix")
    assert memory.state_floats(prof, "muon") == hidden + 2 * (p - hidden)
    assert memory.state_floats(prof, "soap") > 2 * p  # + factors and bases of the sides up to 2048
    assert memory.state_floats(prof, "soap", max_precond_dim=1) == 2 * p


def test_prepare_plans_the_micro_batch_on_a_fake_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepared, "device_memory", lambda device: 4 * GIB)
    prof = load_workload("wikitext").obj.memory_profile(_prep(tmp_path, model="t4").size)
    fits = (memory.usable_bytes(4 * GIB) - memory.fixed_bytes(prof, "adamw") - prof.transient_bytes)
    prep = _prep(tmp_path, model="t4", batch_size=4096)
    assert prep.micro_batch_size is not None and prep.micro_batch_size <= fits // prof.activation_bytes < 4096
    assert json.loads(prep.model_config)["memory_plan"]["capacity_bytes"] == 4 * GIB
    assert _prep(tmp_path, model="t4", batch_size=4096, micro_batch_size=32).micro_batch_size == 32
    monkeypatch.setattr(prepared, "device_memory", lambda device: GIB)
    with pytest.raises(UsageError, match="does not fit"):
        _prep(tmp_path, model="t4")


def test_without_model_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepared, "device_memory", lambda device: GIB)  # no plan without --model
    prep = _prep(tmp_path)
    assert prep.size.name == "tiny" and prep.micro_batch_size is None and prep.budget.max_steps == 1500
    cfg = json.loads(prep.model_config)
    assert (cfg["model"], cfg["n_layer"], cfg["d_model"], cfg["tie"], cfg["params_total"]) == (None, 2, 64, True,
                                                                                              622_912)


def test_a_tiny_ladder_trial_records_its_model(tmp_path: Path) -> None:
    from optbench.engine.runner import run_trial
    from optbench.store.reader import read_trial

    corpus = markov_corpus(20_000)
    data = write_tokens(tmp_path, "wikitext103", train=corpus[:16_000], val=corpus[16_000:])
    cfg = TrialConfig(size="tiny", model="t1", tokens="3072", eval_every_steps=2, data_dir=data, device="cpu")
    result = run_trial(load_workload("wikitext"), load_submission("adamw"), cfg, results_dir=tmp_path / "r")
    rec = result.record
    assert rec.size == "tiny+t1" and rec.total_steps == 3 and rec.target_kind == "provisional"
    assert math.isfinite(result.rows[-1].metric_value) and result.rows[-1].tokens == 3 * 16 * 64
    files = list((tmp_path / "r").rglob("*.parquet"))
    meta, _ = read_trial(files[0])
    got = json.loads(meta["model_config"])
    assert meta["target_kind"] == "provisional" and got == json.loads(rec.model_config)
    assert (got["model"], got["n_layer"], got["d_model"], got["tokens"]) == ("t1", 2, 48, 3072)
    assert got["params_total"] == ladder.param_counts(ladder.LADDER["t1"].options(), 8192)[0]


def test_architecture_options_train() -> None:
    from optbench_workloads._gpt import GPTConfig, build_gpt

    cfg = GPTConfig(vocab_size=50, seq_len=8, n_layer=1, n_head=2, d_model=16, mlp="swiglu", mlp_hidden=24,
                    tie=False, bias=True, norm="layer", pos="learned")
    model = build_gpt(cfg, torch.Generator().manual_seed(0))
    tokens = torch.from_numpy(np.arange(16).reshape(2, 8) % 50)
    model(tokens, tokens).backward()
    assert model.lm_head is not None and model.lm_head.weight.grad is not None
    assert model.head_weight is model.lm_head.weight and model.blocks[0].mlp.gate.bias.grad is not None


def _saved_bytes(opts: dict[str, object], batch: int, *, autocast: bool) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward of ``batch`` sequences on the CPU
    (fp32, or under bf16 autocast as CUDA trials run)."""
    model = build_gpt(gpt_config(opts, 512), torch.Generator().manual_seed(0))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    tokens = torch.randint(0, 512, (batch, int(opts["seq_len"])), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model.features(tokens)
    return sum(v for k, v in seen.items() if k not in params)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("extra", [{}, {"mlp": "swiglu", "mlp_hidden": 512},
                                   {"pos": "learned", "norm": "layer", "bias": True}])
def test_the_activation_model_covers_what_autograd_saves(extra: dict[str, object], autocast: bool) -> None:
    opts = {**ladder.LADDER["t4"].options(), **extra}
    saved = [_saved_bytes(opts, b, autocast=autocast) for b in (1, 3)]
    per_sequence = (saved[1] - saved[0]) / 2  # the batch-independent part cancels
    estimate = ladder.activation_bytes(opts, autocast=autocast)
    assert per_sequence <= estimate <= 1.2 * per_sequence


def test_the_docs_tables_are_the_generated_ones() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "WORKLOADS.md").read_text()
    assert ladder.shapes_table() in docs and ladder.memory_table() in docs  # regenerate: python -m ...ladder --table


def test_a_stored_target_kind_outside_its_vocabulary_is_refused(tmp_path):
    from optbench.store.reader import read_trial, summarize
    from optbench.store.writer import write_trial
    from tests.test_results import _record, _row
    from tests.test_torch_settings import _rewritten

    meta, _ = read_trial(write_trial(tmp_path / "ok", _record(target_kind="provisional"), [_row(0, 1.0)]))
    assert meta["target_kind"] == "provisional"
    path = _rewritten(write_trial(tmp_path / "bad", _record(), [_row(0, 1.0)]), target_kind="guessed")
    _, problem = summarize(path)
    assert isinstance(problem, str) and "target_kind" in problem, problem


def test_list_of_an_lm_workload_names_its_model_sizes():
    from click.testing import CliRunner

    from optbench.cli import main

    res = CliRunner().invoke(main, ["list", "wikitext"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "--model NAME" in text and "124m (12x768)" in text and "t1 (" in text, res.output
    assert "--model" not in CliRunner().invoke(main, ["list", "linreg"]).output  # no ladder, no line
