"""SOAP's factory: every hyperparameter reaches the optimizer (the zoo tests run the factory at its defaults, so a
dropped keyword that falls back to the constructor's default survives there). Kills mutmut survivors of
submissions/soap.py (benchmarks/mutation.py; docs/TESTING.md)."""

from __future__ import annotations

from torch import nn

from optbench_submissions import soap as soap_module
from tests.zoo.helpers import short_info

HP = {"lr": 0.004, "beta1": 0.8, "beta2": 0.85, "shampoo_beta": 0.7, "eps": 1e-6, "weight_decay": 0.3,
      "precondition_frequency": 7, "max_precond_dim": 64, "one_sided": True}


def test_make_maps_every_hyperparameter():
    group = soap_module._make(nn.Linear(4, 3), HP, short_info()).param_groups[0]
    got = {k: group[k] for k in ("lr", "betas", "shampoo_beta", "eps", "weight_decay", "precondition_frequency",
                                 "max_precond_dim", "one_sided")}
    assert got == {"lr": 0.004, "betas": (0.8, 0.85), "shampoo_beta": 0.7, "eps": 1e-6, "weight_decay": 0.3,
                   "precondition_frequency": 7, "max_precond_dim": 64, "one_sided": True}


# ---- Survivors of the full run (docs/TESTING.md, "submissions/soap.py survivors (full run)") ----

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optbench_submissions.soap import SOAP, apply_update  # noqa: E402
from tests.zoo.test_soap import HP as REF_HP  # noqa: E402
from tests.zoo.test_soap import _grads, _params, _run, _soap_matrix  # noqa: E402


@pytest.mark.parametrize("refresh", ["eigh", "qr"])
def test_refresh_of_part_of_a_bucket_matches_the_reference(refresh):
    """Three (2, 3) matrices, the middle one a step behind: at every second step only some of them are due for a
    refresh (the late one sits in a bucket of its own: buckets are keyed by step count). Each must follow its own
    float64 reference."""
    shapes = [(2, 3)] * 3
    params = _params(shapes, seed=5)
    theta0 = [p.detach().numpy().copy() for p in params]
    grads = _grads(8, shapes, seed=6)
    opt = SOAP(params, precondition_frequency=2, refresh=refresh, **REF_HP)
    for k, gs in enumerate(grads):
        for i, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if (i == 1 and k == 0) else torch.from_numpy(g)
        opt.step()
    for i, (p, th) in enumerate(zip(params, theta0)):
        gs = [step[i] for step in (grads[1:] if i == 1 else grads)]
        want = _soap_matrix(th, gs, freq=2, exact=refresh == "eigh", **REF_HP)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"param {i}")


def test_refresh_with_only_the_right_side_rotated_matches_the_reference():
    """Rows above max_precond_dim (6 > 4): no left basis, so the refresh must skip L and still refresh R."""
    params = _params([(6, 3)], seed=7)
    theta0 = params[0].detach().numpy().copy()
    grads = _grads(7, [(6, 3)], seed=8)
    _run(SOAP(params, precondition_frequency=2, refresh="qr", **REF_HP), params, grads)
    want = _soap_matrix(theta0, [g[0] for g in grads], freq=2, exact=False, **REF_HP)
    np.testing.assert_allclose(params[0].detach().numpy(), want, rtol=1e-9, atol=1e-10)


def test_one_sided_square_matrix_rotates_the_rows_only():
    params = _params([(4, 4)])
    opt = SOAP(params, one_sided=True, max_precond_dim=8)
    _run(opt, params, _grads(2, [(4, 4)]))
    st = opt.state[params[0]]
    assert "Q_L" in st and "GG_L" in st and "Q_R" not in st and "GG_R" not in st


def _storages(opt: SOAP) -> dict[tuple[int, str], int]:
    return {(id(p), k): v.untyped_storage().data_ptr() for p, st in opt.state.items()
            for k, v in st.items() if torch.is_tensor(v)}


def test_stacked_state_is_reused_across_steps():
    """Two buckets of two matrices each: after the first Adam step the per-parameter state entries are views of the
    bucket's stacks and stay so (a step copies nothing but the gradients); rebuilding the stacks every step (a cache
    that never hits, or one cache slot shared by both buckets) gives new storage each step."""
    shapes = [(4, 4), (4, 4), (3, 5), (3, 5)]
    params = _params(shapes)
    opt = SOAP(params, precondition_frequency=100)
    grads = _grads(5, shapes)
    _run(opt, params, grads[:2])
    before = _storages(opt)
    _run(opt, params, grads[2:])
    assert _storages(opt) == before
    first = opt.state[params[0]]["exp_avg"]
    assert first.untyped_storage().data_ptr() == opt.state[params[1]]["exp_avg"].untyped_storage().data_ptr()


def test_adamw_state_is_float32_and_contiguous():
    """State of AdamW-routed parameters: float32 for a bfloat16 vector, contiguous for a transposed matrix whose
    sides are both above max_precond_dim (zeros_like would otherwise copy its transposed strides)."""
    vec = nn.Parameter(torch.randn(5).bfloat16())
    mat = nn.Parameter(torch.randn(6, 5).t())
    opt = SOAP([vec, mat], max_precond_dim=2)
    vec.grad, mat.grad = torch.randn(5).bfloat16(), torch.randn(5, 6)
    opt.step()
    assert opt.state[vec]["exp_avg"].dtype == opt.state[vec]["exp_avg_sq"].dtype == torch.float32
    assert opt.state[mat]["exp_avg"].is_contiguous() and opt.state[mat]["exp_avg_sq"].is_contiguous()


@pytest.mark.parametrize("decay", [1.0, 0.9, 2.0])
def test_apply_update_full_precision(decay):
    p = torch.randn(3, 4, dtype=torch.float64)
    u = torch.randn(12, dtype=torch.float64)
    want = p.numpy() * decay - 0.3 * u.numpy().reshape(3, 4)
    apply_update([p], [u], alpha=-0.3, decay=decay)
    np.testing.assert_allclose(p.numpy(), want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("decay", [1.0, 0.99, 2.0])
def test_apply_update_half_precision_rounds_once(decay):
    """A bfloat16 parameter with a float32 update: theta * decay + alpha * u computed in float32, rounded once (two
    roundings, in bfloat16 after the decay and again after the add, differ in some of the 4096 entries)."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(64, 64, generator=g).bfloat16()
    u = torch.randn(64, 64, generator=g) * 1e-2
    want = (p.float() * decay + -0.7 * u).bfloat16()
    apply_update([p], [u], alpha=-0.7, decay=decay)
    assert p.dtype == torch.bfloat16 and torch.equal(p, want)


def test_apply_update_takes_non_contiguous_updates():
    p = torch.randn(12, dtype=torch.float64)
    u = torch.randn(4, 3, dtype=torch.float64).t()  # (3, 4), not contiguous: needs a reshape, not a view
    want = p.numpy() + 0.5 * u.numpy().reshape(12)
    apply_update([p], [u], alpha=0.5, decay=1.0)
    np.testing.assert_allclose(p.numpy(), want, rtol=1e-13, atol=1e-15)


def test_constructor_defaults_are_the_papers():
    d = SOAP([nn.Parameter(torch.zeros(2, 2))]).defaults
    assert (d["lr"], d["betas"], d["shampoo_beta"], d["eps"], d["weight_decay"]) == (3e-3, (0.95, 0.95), 0.95, 1e-8,
                                                                                     0.01)
    assert (d["precondition_frequency"], d["max_precond_dim"], d["refresh"], d["one_sided"]) == (10, 2048, "qr", False)


HYPER_MSG = r"^invalid SOAP hyperparameters lr=.* betas=.* shampoo_beta=.* eps=.* weight_decay=.*$"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": -1e-3}, HYPER_MSG), ({"eps": -1e-9}, HYPER_MSG), ({"weight_decay": -0.1}, HYPER_MSG),
    ({"betas": (0.9, 1.0)}, HYPER_MSG), ({"betas": (1.5, 0.9)}, HYPER_MSG), ({"shampoo_beta": -0.1}, HYPER_MSG),
    ({"precondition_frequency": 0}, r"^precondition_frequency and max_precond_dim must be >= 1$"),
    ({"max_precond_dim": 0}, r"^precondition_frequency and max_precond_dim must be >= 1$"),
    ({"refresh": "svd"}, r"^refresh must be one of \('qr', 'eigh'\), got 'svd'$"),
])
def test_invalid_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SOAP([nn.Parameter(torch.zeros(2, 2))], **kwargs)


def test_boundary_hyperparameters_are_accepted():
    p = nn.Parameter(torch.ones(3, 2))
    opt = SOAP([p], lr=0.0, eps=0.0, weight_decay=0.0, betas=(0.0, 0.0), shampoo_beta=0.0, precondition_frequency=1,
               max_precond_dim=1)
    p.grad = torch.ones(3, 2)
    opt.step()
    assert torch.equal(p, torch.ones(3, 2))  # lr 0: nothing moves


def test_state_and_step_tensors_stay_on_the_parameters_device():
    """On the meta device (the only non-CPU device a CPU machine has): the zero moments and the state of matrices
    whose step counts differ (and so whose refreshes fall on different steps) must all be made on the parameters'
    device; a tensor left on the default device (CPU) fails to mix with them."""
    params = [nn.Parameter(torch.empty(3, 4, device="meta")) for _ in range(3)]
    opt = SOAP(params, precondition_frequency=2, max_precond_dim=8)
    for k in range(5):
        for i, p in enumerate(params):
            p.grad = None if (i == 1 and k == 0) else torch.empty(3, 4, device="meta")
        opt.step()
    devices = {v.device.type for st in opt.state.values() for v in st.values() if torch.is_tensor(v)}
    assert devices == {"meta"} and {p.device.type for p in params} == {"meta"}
