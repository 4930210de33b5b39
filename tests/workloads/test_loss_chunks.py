"""The LM head's chunked cross-entropy has the plain loss's value and gradient, without whole-batch logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optbench_workloads._gpt import GPTConfig, build_gpt
from optbench_workloads._loss import chunk_rows, head_cross_entropy, sample_targets


def plain_and_chunked(n: int, rows: int, reduction: str = "mean"):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (n,), generator=g)
    plain = F.cross_entropy(F.linear(h, w), y, reduction=reduction)
    plain_grads = torch.autograd.grad(plain, (h, w))
    chunked = head_cross_entropy(h, w, y, reduction=reduction, rows=rows)
    chunked_grads = torch.autograd.grad(chunked, (h, w))
    return (plain, plain_grads), (chunked, chunked_grads)


@pytest.mark.parametrize("n, rows", [(53, 7), (53, 53), (64, 16), (5, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_value_and_gradient_equal_the_plain_loss(n: int, rows: int, reduction: str) -> None:
    (plain, plain_grads), (chunked, chunked_grads) = plain_and_chunked(n, rows, reduction)
    assert torch.allclose(chunked, plain, rtol=1e-5)
    for a, b in zip(chunked_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_without_gradients_the_chunks_are_summed_directly() -> None:
    (plain, _), _ = plain_and_chunked(40, 40)
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(40, 16, generator=g), torch.randn(50, 16, generator=g)
    y = torch.randint(0, 50, (40,), generator=g)
    with torch.no_grad():
        assert torch.allclose(head_cross_entropy(h, w, y, rows=6), plain, rtol=1e-6)


def test_chunks_hold_a_bounded_number_of_logits() -> None:
    assert chunk_rows(50257) * 50257 <= 1 << 25 < (chunk_rows(50257) + 1) * 50257
    assert chunk_rows(1 << 30) == 1


def test_the_decoder_loss_is_the_cross_entropy_of_its_logits() -> None:
    cfg = GPTConfig(vocab_size=97, seq_len=12, n_layer=1, n_head=2, d_model=16)
    model = build_gpt(cfg, torch.Generator().manual_seed(0))
    x = torch.randint(0, 97, (3, 12), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)
    logits = model(x)  # (3, 12, 97)
    assert logits.shape == (3, 12, 97)
    expected = F.cross_entropy(logits.flatten(0, 1), y.reshape(-1))
    assert torch.allclose(model(x, y), expected, rtol=1e-6)
    assert torch.allclose(model(x, y, reduction="sum"), expected * 36, rtol=1e-5)


def test_sampled_targets_follow_the_heads_distribution() -> None:
    h = torch.zeros(4000, 2)
    w = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # uniform over 3 ids
    w[2, 0] = 1.0
    h[:, 0] = torch.log(torch.tensor(2.0))  # id 2 twice as likely: p = (1/4, 1/4, 1/2)
    ids = sample_targets(h, w, torch.Generator().manual_seed(0), rows=333)
    freq = torch.bincount(ids, minlength=3).float() / len(ids)
    assert torch.allclose(freq, torch.tensor([0.25, 0.25, 0.5]), atol=0.03)


def test_checkpointed_chunks_do_not_stash_the_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    # a chunk draws no random numbers: saving and restoring every generator around each one is pure cost
    import optbench_workloads._loss as loss

    seen: list[dict] = []
    real = loss.checkpoint

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(loss, "checkpoint", spy)
    h = torch.randn(10, 8, requires_grad=True)
    head_cross_entropy(h, torch.randn(50, 8), torch.randint(0, 50, (10,)), rows=4).backward()
    assert len(seen) == 3 and all(k.get("preserve_rng_state") is False for k in seen)
