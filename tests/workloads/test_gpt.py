"""The GPT decoder: causality, tied head, initial loss, initialisation scale, options."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from optbench_workloads._gpt import GPTConfig, build_gpt, count_params

VOCAB = 97


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Run these small-tensor tests on one intra-op thread: on a shared 2-core machine, OpenMP barriers between two
    threads cost more than the work itself (BatchNorm on a (16, 8, 32, 32) batch: 100 ms with 2 threads, 2 ms
    with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(**kw: object) -> torch.nn.Module:
    opts = {"vocab_size": VOCAB, "seq_len": 16, "n_layer": 2, "n_head": 2, "d_model": 16, **kw}
    return build_gpt(GPTConfig(**opts), torch.Generator().manual_seed(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("norm,pos", [("rms", "rope"), ("layer", "learned"), ("rms", "learned"), ("layer", "rope")])
def test_attention_is_causal(norm: str, pos: str) -> None:
    model = _model(norm=norm, pos=pos).eval()
    # Random weights far from init so that every position depends visibly on every earlier one.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 12, VOCAB)
    torch.testing.assert_close(a[:, :7], b[:, :7])  # earlier positions never see token 7
    assert (a[:, 7:] - b[:, 7:]).abs().amax(dim=-1).min() > 1e-4  # later ones do


def test_initial_loss_is_near_log_vocab() -> None:
    model = _model(vocab_size=4096, d_model=32)
    gen = torch.Generator().manual_seed(0)
    tokens, targets = torch.randint(0, 4096, (2, 4, 16), generator=gen)
    logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert abs(loss.item() - math.log(4096)) < 0.05


def test_head_is_tied_and_counted_once() -> None:
    model = _model()
    cfg = model.cfg
    names = [n for n, _ in model.named_parameters()]
    assert not any("head" in n for n in names)
    per_layer = 3 * cfg.d_model**2 + cfg.d_model**2 + 2 * cfg.mlp_ratio * cfg.d_model**2 + 2 * cfg.d_model
    assert count_params(model) == VOCAB * cfg.d_model + cfg.n_layer * per_layer + cfg.d_model


def test_residual_projections_are_scaled_down() -> None:
    model = _model(n_layer=8, d_model=64, n_head=4)
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert block.mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_same_generator_same_weights() -> None:
    a, b = _model(), _model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, seq_len=8, n_layer=1, n_head=3, d_model=16)
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(vocab_size=10, seq_len=8, n_layer=1, n_head=2, d_model=16, norm="batch")
