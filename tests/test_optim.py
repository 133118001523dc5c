"""One hand-worked step (or two) per optimiser, and schedule values at chosen steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nn.optim import SGD, Adam, AdamW, Constant, Cosine, StepDecay

P0 = [1.0, -2.0]
G1 = [0.5, 0.25]
G2 = [-0.5, 1.0]
LR = 0.1


def run(opt_cls, grads_seq, backend, **kw):
    xp = backend.xp
    params, grads = xp.asarray(P0, dtype=xp.float64), xp.zeros(2, dtype=xp.float64)
    opt = opt_cls(params, grads, backend=backend, **kw)
    for g in grads_seq:
        grads[...] = xp.asarray(g)
        opt.step(LR)
    return backend.to_host(params)


def test_sgd_plain(backend):
    np.testing.assert_allclose(run(SGD, [G1], backend), [1 - 0.05, -2 - 0.025])


def test_sgd_momentum_two_steps(backend):
    # v1 = g1; p1 = p0 - lr v1.  v2 = 0.9 v1 + g2; p2 = p1 - lr v2
    v1 = np.array(G1)
    v2 = 0.9 * v1 + np.array(G2)
    expected = np.array(P0) - LR * v1 - LR * v2
    np.testing.assert_allclose(run(SGD, [G1, G2], backend, momentum=0.9), expected)


def test_sgd_nesterov_one_step(backend):
    # v1 = g1; p1 = p0 - lr (g1 + 0.9 v1) = p0 - 0.19 g1
    np.testing.assert_allclose(run(SGD, [G1], backend, momentum=0.9, nesterov=True),
                               [1 - 0.095, -2 - 0.0475])


def test_sgd_weight_decay_only_on_decayed_slice(backend):
    # n_decayed=1: g[0] += 0.5 * p[0] = 0.5 + 0.5 = 1.0; g[1] unchanged
    np.testing.assert_allclose(run(SGD, [G1], backend, weight_decay=0.5, n_decayed=1),
                               [1 - 0.1, -2 - 0.025])


def textbook_adam(grads_seq, wd=0.0, decoupled=False, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba, Algorithm 1, element by element in plain floats."""
    p, m, v = list(P0), [0.0, 0.0], [0.0, 0.0]
    for t, g in enumerate(grads_seq, start=1):
        for i in range(2):
            gi = g[i]
            if decoupled:
                p[i] -= LR * wd * p[i]
            else:
                gi += wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] -= LR * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_adam_first_step_is_lr_times_sign(backend):
    np.testing.assert_allclose(run(Adam, [G1], backend), [0.9, -2.1], rtol=1e-7)


@pytest.mark.parametrize("eps", [1e-8, 0.1])
def test_adam_two_steps(backend, eps):
    np.testing.assert_allclose(run(Adam, [G1, G2], backend, eps=eps), textbook_adam([G1, G2], eps=eps),
                               rtol=1e-12)


def test_adam_coupled_l2(backend):
    got = run(Adam, [G1, G2], backend, weight_decay=0.3)
    np.testing.assert_allclose(got, textbook_adam([G1, G2], wd=0.3), rtol=1e-12)


def test_adamw_decoupled_decay(backend):
    got = run(AdamW, [G1, G2], backend, weight_decay=0.3)
    np.testing.assert_allclose(got, textbook_adam([G1, G2], wd=0.3, decoupled=True), rtol=1e-12)
    assert not np.allclose(got, run(Adam, [G1, G2], backend, weight_decay=0.3))


def test_optimizer_state_round_trip(backend):
    xp = backend.xp
    params, grads = xp.asarray(P0), xp.asarray(G1)
    opt = Adam(params, grads, backend=backend)
    opt.step(LR)
    state = opt.state_dict()
    params2 = params.copy()
    clone = Adam(params2, grads, backend=backend)
    clone.load_state_dict(state)
    opt.step(LR)
    clone.step(LR)
    np.testing.assert_array_equal(backend.to_host(params), backend.to_host(params2))


@pytest.mark.parametrize("kw,message", [
    ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
    ({"weight_decay": -1}, "weight_decay"), ({"nesterov": True}, "nesterov"),
])
def test_sgd_rejects_bad_hyperparameters(kw, message):
    with pytest.raises(ValueError, match=message):
        SGD(np.zeros(2), np.zeros(2), **kw)


@pytest.mark.parametrize("kw,message", [
    ({"beta1": 1.0}, "beta1"), ({"beta2": -0.5}, "beta2"), ({"eps": 0}, "eps"),
    ({"weight_decay": float("nan")}, "weight_decay"),
])
def test_adam_rejects_bad_hyperparameters(kw, message):
    with pytest.raises(ValueError, match=message):
        AdamW(np.zeros(2), np.zeros(2), **kw)


def test_constant_schedule_with_warmup():
    s = Constant(0.1, total_steps=100, warmup=4)
    assert [s(t) for t in (0, 1, 3, 4, 99)] == pytest.approx([0.025, 0.05, 0.1, 0.1, 0.1])


def test_step_schedule():
    s = StepDecay(1.0, total_steps=100, step_size=10, gamma=0.5)
    assert [s(t) for t in (0, 9, 10, 25, 99)] == pytest.approx([1, 1, 0.5, 0.25, 0.5 ** 9])


def test_cosine_schedule():
    s = Cosine(1.0, total_steps=110, warmup=10, min_lr=0.1)
    assert s(9) == pytest.approx(1.0)  # end of warm-up
    assert s(10) == pytest.approx(1.0)  # start of the cosine
    assert s(60) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert s(110) == pytest.approx(0.1)
    assert s(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("make", [
    lambda: Constant(0, 10), lambda: Constant(0.1, 0), lambda: Constant(0.1, 10, warmup=10),
    lambda: StepDecay(0.1, 10, step_size=0), lambda: StepDecay(0.1, 10, gamma=1.5),
    lambda: Cosine(0.1, 10, min_lr=0.2),
])
def test_schedules_reject_bad_values(make):
    with pytest.raises(ValueError):
        make()
