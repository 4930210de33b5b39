"""Scaling fits (optbench.scoring.fits): the power-law fit recovers known exponents, its bootstrap intervals cover
the truth in most of 100 generated data sets, the best-learning-rate fit finds a known exponent on a grid, and the
effective compute speedup is 1 against itself, k for a curve shifted by k, and flagged beyond the measured range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optbench.scoring.fits import Point, PowerLaw, fit_best_lr, fit_free_floor, fit_loss, loglog, speedup

C = np.array([1e12, 4e12, 1.6e13, 6.4e13, 2.56e14])  # five sizes' compute, 4x apart
A, B = 30.0, 0.08


def _points(law: PowerLaw, *, seeds: int = 1, noise: float = 0.0, rng=None, xs=C) -> list[Point]:
    """One point per compute: a grid of 3 learning rates whose middle one is the law (the others 5% worse),
    ``seeds`` columns with multiplicative log-normal noise."""
    rng = rng or np.random.default_rng(0)
    out = []
    for x in xs:
        base = float(law(x))
        eps = np.exp(noise * rng.standard_normal((3, seeds))) if noise else np.ones((3, seeds))
        grid = np.array([[1.05], [1.0], [1.05]]) * base
        out.append(Point(x=float(x), losses=grid * eps, candidates=(1e-3, 3e-3, 1e-2)))
    return out


def test_loglog_is_exact_on_a_power_law_and_batched():
    y = np.stack([A * C**-B, 2 * A * C**-0.3])
    log_a, b = loglog(C, y)
    assert np.allclose(b, [B, 0.3]) and np.allclose(np.exp(log_a), [A, 2 * A])
    assert np.isnan(loglog(C[:1], y[:, :1])[1]).all()  # one point: no slope


def test_fit_recovers_known_exponent_and_scale_exactly():
    fit = fit_loss(_points(PowerLaw(a=A, b=B)), n_boot=50)
    assert fit.law.b == pytest.approx(B) and fit.law.a == pytest.approx(A)
    assert fit.b.low == pytest.approx(B) and fit.b.high == pytest.approx(B)  # one seed: nothing to resample
    assert fit.x_range == (C[0], C[-1]) and fit.points == 5


def test_fit_with_a_given_floor_recovers_the_rest():
    fit = fit_loss(_points(PowerLaw(a=A, b=0.2, floor=1.5)), floor=1.5, n_boot=20)
    assert fit.law.b == pytest.approx(0.2) and fit.law.a == pytest.approx(A) and fit.law.floor == 1.5


def test_free_floor_is_found_on_exact_data():
    law = fit_free_floor(_points(PowerLaw(a=3000.0, b=0.25, floor=1.2)), grid=200)
    assert law.floor == pytest.approx(1.2, abs=0.01) and law.b == pytest.approx(0.25, rel=0.05)
    with pytest.raises(ValueError):
        fit_free_floor(_points(PowerLaw(a=A, b=B))[:3])


def test_intervals_cover_the_true_exponent_in_most_of_100_draws():
    """Nominal 90%: resampling 8 seeds per point undercovers a little (the bootstrap's variance is (n-1)/n of the
    truth), so at least 75 of 100 seeded data sets must cover, and a broken interval (too narrow, off centre) does
    not (it covers ~0-30)."""
    rng = np.random.default_rng(123)
    law = PowerLaw(a=A, b=B)
    covered_b = covered_a = 0
    for i in range(100):
        fit = fit_loss(_points(law, seeds=8, noise=0.02, rng=rng), n_boot=400, seed=i)
        covered_b += fit.b.covers(B)
        covered_a += fit.a.covers(A)
        assert fit.b.low < fit.b.value < fit.b.high
    assert covered_b >= 75 and covered_a >= 75, (covered_b, covered_a)


def test_best_lr_fit_recovers_its_exponent_on_a_grid():
    sizes = np.array([1e5, 1e6, 1e7, 1e8])
    grid = tuple(float(x) for x in 10.0 ** np.arange(-5, 0.01, 0.25))  # lr grid, 4 points per decade
    c, d = 0.3, 0.5
    points = []
    for n in sizes:
        best = c * n**-d
        losses = (1.0 + (np.log10(np.array(grid)) - np.log10(best)) ** 2)[:, None]  # a parabola in log lr
        points.append(Point(x=float(n), losses=losses, candidates=grid))
    fit = fit_best_lr(points, n_boot=20)
    assert fit.law.b == pytest.approx(d, abs=0.01) and fit.law.a == pytest.approx(c, rel=0.1)


def test_speedup_of_a_curve_against_itself_is_one():
    pts = _points(PowerLaw(a=A, b=B), seeds=4, noise=0.0)
    ref = fit_loss(pts, n_boot=100)
    for p in pts:
        s = speedup(ref, p)
        assert s.k.value == pytest.approx(1.0) and s.k.low == pytest.approx(1.0) and s.k.high == pytest.approx(1.0)
        assert not s.extrapolated


def test_speedup_of_a_shifted_curve_is_the_shift_with_an_interval():
    """A submission whose loss at C is the reference's at 2C has speedup 2 everywhere; with noise its interval
    holds 2; the point at the top of the range needs compute beyond the reference's and is flagged."""
    rng = np.random.default_rng(5)
    ref = fit_loss(_points(PowerLaw(a=A, b=B), seeds=6, noise=0.01, rng=rng), n_boot=500)
    sub = _points(PowerLaw(a=A * 2.0**-B, b=B), seeds=6, noise=0.01, rng=rng)
    found = [speedup(ref, p) for p in sub]
    assert all(s.k.low < s.k.value < s.k.high and s.k.value == pytest.approx(2.0, rel=0.15) for s in found)
    assert sum(s.k.covers(2.0) for s in found) >= 4
    assert [s.extrapolated for s in found] == [False, False, False, False, True]


def test_speedup_is_nan_where_the_reference_never_reaches_the_loss():
    ref = fit_loss(_points(PowerLaw(a=A, b=0.1, floor=3.0)), floor=3.0, n_boot=10)
    s = speedup(ref, Point(x=1e12, losses=np.array([[2.9]])))
    assert math.isnan(s.k.value) and math.isnan(s.needed) and not s.extrapolated
