"""FLOPs on every result and the optimizer's share of the timed step (issue 22, items 1 and 2).

Pinned: the LM's analytic formula against FlopCounterMode, linreg's exact count, AdamW's optimizer FLOPs against a
hand count, the amortisation of a periodic refresh, a trial unchanged by the counting, the record's fields (and
older files without them), ``--by flops`` ordering, the peak table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from optbench.engine import flops
from optbench.engine.loop import TrialLoop
from optbench.engine.prepared import TrialConfig
from optbench.engine.runner import run_trial
from optbench.plugins.registry import load_submission, load_workload
from optbench.scoring import profiles as scoring

CPU = torch.device("cpu")


def _lm_task(vocab: int = 512):
    from optbench_workloads import lm

    tokens = torch.randint(0, vocab, (20_000,), generator=torch.Generator().manual_seed(0)).numpy()
    return lm.LMTask(lm.wikitext.sizes["tiny"], CPU, train=tokens[:16_000], val=tokens[16_000:], vocab_size=vocab)


def test_lm_formula_matches_the_counter_on_the_tiny_model():
    """PaLM's 6N + 12 L H Q T per token against FlopCounterMode over one forward+backward. Attention runs on SDPA's
    math backend here so that the counter sees its matmuls (the CPU's fused kernel is not in its registry). Both
    leave out softmax, norms and activations, so the stated tolerance (1%) covers only the norm gains and the
    head's layout; on this model they agree exactly."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    task = _lm_task()
    model = task.init_model(torch.Generator().manual_seed(0))
    batch = task.next_batch(4, torch.Generator().manual_seed(1))
    with sdpa_kernel(SDPBackend.MATH):
        counted = flops.model_counted(lambda: task.loss(model, batch).backward(), devices=[CPU]) / 4
    c = task.cfg
    n = c.n_layer * 12 * c.d_model**2 + c.vocab_size * c.d_model  # by hand: blocks' matrices + head
    assert task.flops_per_example() == c.seq_len * (6 * n + 12 * c.n_layer * c.d_model * c.seq_len)
    assert counted == pytest.approx(task.flops_per_example(), rel=0.01)


def test_linreg_count_is_exact_and_the_counter_agrees():
    task = load_workload("linreg").obj.setup(load_workload("linreg").obj.sizes["tiny"], device=CPU, data_dir=None)
    model = task.init_model(torch.Generator())
    batch = task.next_batch(8, torch.Generator().manual_seed(0))
    counted = flops.model_counted(lambda: task.loss(model, batch).backward(), devices=[CPU])
    assert task.flops_per_example() == 4 * task.dim == counted / 8  # forward 2d + weight gradient 2d


def test_adamw_optimizer_flops_match_the_hand_count():
    """Hand count per parameter of torch's AdamW step: decay mul 1, lerp 3 (m + w (g - m)), mul 1, addcmul 2,
    sqrt 1, div 1, add eps 1, addcdiv 2 = 12 FLOPs (plus one for the 0-d step counter)."""
    model = nn.Linear(256, 128, bias=False)
    for foreach in (False, True):
        updater = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=foreach)
        per_step = flops.optimizer_flops_per_step(model, updater, hparams={}, device=CPU)
        assert per_step == pytest.approx(12 * 256 * 128, abs=2)
        assert not updater.state  # counted on a copy: the trial's optimizer took no step


class _Periodic(torch.optim.Optimizer):
    """A refresh (one n x n matmul) at steps k + 1, 2 k + 1, ... (``precondition_frequency`` = k); else nothing."""

    def __init__(self, params, k: int) -> None:
        super().__init__(params, {"k": k})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                t = state.get("t", 0)
                if t % group["k"] == 0:
                    p.grad @ p.grad.T
                state["t"] = t + 1


def test_periodic_refresh_is_amortised_by_its_frequency():
    model = nn.Linear(16, 16, bias=False)
    per_step = flops.optimizer_flops_per_step(model, _Periodic(model.parameters(), 10),
                                              hparams={"precondition_frequency": 10}, device=CPU)
    assert per_step == pytest.approx(2 * 16**3 / 10)


def _linreg(results: Path, opt: str = "adamw", **cfg):
    return run_trial(load_workload("linreg"), load_submission(opt), TrialConfig(**{"max_steps": 150, **cfg}),
                     results_dir=results)


def _rows(result) -> list[tuple]:
    return [(r.step, r.metric_value, r.train_loss) for r in result.rows]


def test_counting_leaves_the_trial_bit_identical(tmp_path, monkeypatch):
    counted = _linreg(tmp_path / "a")
    monkeypatch.setattr(TrialLoop, "count_flops", lambda self: None)
    plain = _linreg(tmp_path / "b")
    assert _rows(counted) == _rows(plain)
    assert plain.record.model_flops_per_example is None and plain.record.total_flops is None


def test_counter_fallback_leaves_a_trial_bit_identical(tmp_path, monkeypatch):
    """The teacher has no analytic count: its model is counted on a copy, from a generator of the count's own."""
    def run(root):
        return run_trial(load_workload("teacher"), load_submission("adamw"), TrialConfig(max_steps=60),
                         results_dir=root)
    counted = run(tmp_path / "a")
    monkeypatch.setattr(TrialLoop, "count_flops", lambda self: None)
    assert _rows(counted) == _rows(run(tmp_path / "b"))
    assert counted.record.model_flops_per_example > 0


def test_record_carries_flops_and_the_optimizer_share(tmp_path):
    rec = _linreg(tmp_path, max_steps=3000).record
    assert rec.outcome == "reached"
    d = 256
    assert rec.model_flops_per_example == 4 * d
    assert rec.optimizer_flops_per_step == pytest.approx(11 * d, abs=2)  # the adamw submission's foreach path
    assert rec.flops_to_target == (rec.model_flops_per_example * rec.examples_to_target
                                   + rec.optimizer_flops_per_step * rec.steps_to_target)
    assert rec.total_flops >= rec.flops_to_target
    assert rec.mfu is None  # no GPU peak on a CPU
    assert 0.0 < rec.optimizer_share < 1.0


def test_older_files_read_with_the_new_fields_none(tmp_path):
    from optbench.store.reader import read_trial
    from tests.test_torch_settings import _rewritten

    path = _linreg(tmp_path, max_steps=60).path
    new = ("model_flops_per_example", "optimizer_flops_per_step", "flops_to_target", "total_flops", "mfu",
           "optimizer_share")
    meta, _ = read_trial(_rewritten(path, **{k: None for k in new}))
    assert all(meta[k] is None for k in new)


def test_negative_flops_are_refused():
    from optbench.store.checks import _check_value

    with pytest.raises(ValueError, match="negative"):
        _check_value("flops_to_target", -1.0)


def _trial(sub: str, steps: int, flops_: float) -> dict:
    return dict(workload="lm", submission=sub, study="s0", trial="t0", seed=0, outcome="reached",
                time_to_target=1.0, steps_to_target=steps, examples_to_target=steps, tokens_to_target=steps,
                flops_to_target=flops_, metric_goal="min", target=3.0, best_metric=2.9, hparams=json.dumps({}))


def test_score_by_flops_charges_the_dearer_optimizer_step():
    """Fewer steps but dearer steps: SOAP wins by steps, AdamW by FLOPs."""
    trials = pd.DataFrame([_trial("soap", 80, 8e12), _trial("adamw", 100, 5e12)])
    by_steps = scoring.aggregate(trials, by="steps")["value"]
    by_flops = scoring.aggregate(trials, by="flops")["value"]
    assert by_steps[("lm", "soap")] < by_steps[("lm", "adamw")]
    assert by_flops[("lm", "adamw")] < by_flops[("lm", "soap")]


def test_score_by_flops_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from optbench.cli import main

    _linreg(tmp_path, max_steps=3000)
    _linreg(tmp_path, "sgd", max_steps=3000)
    out = CliRunner().invoke(main, ["score", "--results-dir", str(tmp_path), "--by", "flops", "--format", "json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert payload["by"] == "flops" and set(payload["optimizer_share"]) == {"adamw", "sgd"}
    assert all(0 < v < 1 for v in payload["optimizer_share"].values())
    table = CliRunner().invoke(main, ["score", "--results-dir", str(tmp_path), "--by", "flops"])
    assert "optimizer step's share of the timed seconds" in table.output


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce RTX 4090", None),
                                       ("", None)])
def test_peak_table(name, peak):
    assert flops.peak_flops(name) == peak


def test_mfu_is_model_flops_per_second_over_the_peak():
    assert flops.mfu(1e9, 989, 1.0, device_name="NVIDIA H100") == pytest.approx(1e-3)
    assert flops.mfu(1e9, 989, 1.0, device_name="NVIDIA H100", world_size=2) == pytest.approx(5e-4)
    assert flops.mfu(1e9, 10, 1.0, device_name="cpu") is None
    assert flops.mfu(None, 10, 1.0, device_name="NVIDIA H100") is None


def test_optimizer_timer_share_on_cpu():
    timer = flops.OptimizerTimer(CPU)
    timer.seconds = 0.25
    assert timer.share(1.0) == 0.25 and timer.share(0.0) is None
    assert flops.OptimizerTimer(torch.device("meta")).share(1.0) is None
    assert not math.isnan(timer.share(0.5))


def test_list_shows_flops_per_example_per_size():
    from click.testing import CliRunner

    from optbench.cli import main

    out = CliRunner().invoke(main, ["list", "linreg"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "FLOPs: per example" in out.output and "1.02e+03" in out.output  # 4 x 256
    out = CliRunner().invoke(main, ["list", "cifar10"], env={"COLUMNS": "200"})
    assert "counted" in out.output and "at trial start" in out.output
    assert load_workload("wikitext").obj.flops_per_example(load_workload("wikitext").obj.sizes["paper"]) == \
        pytest.approx(8.75e11, rel=0.01)  # GPT-2 small: (6 x 124M + 113M) FLOPs per token x 1024 tokens


def test_report_has_a_compute_section_scored_by_flops(tmp_path):
    from optbench.report.html import build_report
    from optbench.store.reader import read_results

    _linreg(tmp_path / "res", max_steps=3000)
    _linreg(tmp_path / "res", "sgd", max_steps=3000)
    build_report(read_results(tmp_path / "res"), out=tmp_path / "out", by="flops", n_boot=20)
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<table id="compute">' in page and "optimizer_flops_per_step" in page and "by flops" in page


def test_compute_section_is_left_out_for_older_results():
    from optbench.report.sections import compute_html

    old = pd.DataFrame({"workload": ["w"], "submission": ["s"], "model_flops_per_example": [None],
                        "optimizer_flops_per_step": [None], "optimizer_share": [None], "mfu": [None]})
    assert compute_html(old) == ""
