"""Optimisers over the model's flat parameter buffer, and learning-rate schedules.

An optimiser owns the update: `step(lr)` changes `params` in place from `grads`.
Weight decay applies to `params[:n_decayed]` (the weights; biases are not
decayed, see nn.model). Its state is a few flat arrays, saved and restored with
`state_dict` / `load_state_dict`. Every pass of a CPU update is element by element,
so it may run on parts of the buffers - `apply(..., part=)`, one part per core
(nn/shards.py) - with the bits of one pass over the whole.

The fit loop splits a step in two, so that the update can run inside a CUDA graph:
`schedule(lrs)` computes, on the host, each coming step's scalars (learning rate,
bias corrections) into a table on the device, once per epoch; `update(step)` then
applies row `step` (a (1,) int array on the device) - on the CPU with NumPy passes,
on a GPU as one fused kernel (nn.kernels).
"""

from __future__ import annotations

import math

import numpy as np

from nn import kernels
from nn.backend import CPU, Backend


def _check(name: str, value, low: float, high: float = math.inf, low_open=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value < high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high != math.inf else "")
        raise ValueError(f"{name} must be {bound} (got {value!r})")
    return float(value)


class Optimizer:
    """Shared plumbing: flat buffers, scratch space, per-step scalars, state save/restore."""

    state_names: tuple[str, ...] = ()
    width = 1  # scalars per step in the table

    def __init__(self, params, grads, n_decayed: int | None = None, weight_decay: float = 0.0,
                 backend: Backend = CPU) -> None:
        self.params, self.grads, self.backend = params, grads, backend
        self.n_decayed = params.size if n_decayed is None else n_decayed
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.t = 0
        xp = backend.xp
        shared = backend.shared_zeros  # a shard worker process updates its part of them (nn/shards.py)
        self.tmp = shared(params.shape, params.dtype)
        for name in self.state_names:
            setattr(self, name, shared(params.shape, params.dtype))
        self.table = None  # (steps * width,) float64: each scheduled step's scalars
        self._first = xp.zeros(1, dtype=np.int32)

    def step(self, lr: float) -> None:
        """One update with learning rate `lr`."""
        self.schedule([lr])
        self.update(self._first)

    def schedule(self, lrs) -> None:
        """The scalars of the next len(lrs) steps, into `table` (kept at its size once
        made, so a captured step keeps reading the same buffer)."""
        host = np.array([self.scalars(lr) for lr in lrs], dtype=np.float64).reshape(-1)
        if self.table is None or self.table.size < host.size:
            self.table = self.backend.xp.zeros(host.size, dtype=np.float64)
        self.table[:host.size] = self.backend.to_device(host)

    def update(self, step) -> None:
        """Apply the scalars of table row `step` (a (1,) int array)."""
        if self.backend.is_gpu:
            self.fused_update(step)
            return
        self.apply(*self.row(step))

    def row(self, step) -> tuple[float, ...]:
        """The scalars of table row `step` (a (1,) int array), on the host (CPU)."""
        i = int(step[0]) * self.width
        return tuple(float(v) for v in self.table[i:i + self.width])

    def _parts(self, part: slice | None):
        """(params, grads, tmp) of `part` (None: all) and the slice of those that decay."""
        part = part or slice(0, self.params.size)
        decayed = slice(0, max(0, min(part.stop, self.n_decayed) - part.start))
        return part, (self.params[part], self.grads[part], self.tmp[part]), decayed

    def scalars(self, lr: float) -> tuple[float, ...]:
        """Count one more step and return its scalars (on the host)."""
        raise NotImplementedError

    def apply(self, *scalars: float, part: slice | None = None) -> None:
        """The NumPy update with this step's scalars, of `part` of the buffers (None: all)."""
        raise NotImplementedError

    def fused_update(self, step) -> None:
        """The one-kernel GPU update reading its scalars from the table."""
        raise NotImplementedError

    def _coupled_decay(self, p, g, tmp, w: slice) -> None:
        """L2 decay folded into the gradient: g += wd * p (weights only: slice w)."""
        if self.weight_decay:
            tmp[w] = p[w]
            tmp[w] *= self.weight_decay
            g[w] += tmp[w]

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: self.backend.to_host(getattr(self, name)) for name in self.state_names}
        state["t"] = np.array(self.t, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self.state_names:
            getattr(self, name)[...] = self.backend.to_device(state[name])
        self.t = int(state["t"])


class SGD(Optimizer):
    """v = momentum * v + g;  p -= lr * v   (Nesterov: p -= lr * (g + momentum * v)).

    `weight_decay` is classic L2, added to the gradient.
    """

    state_names = ("velocity",)

    def __init__(self, params, grads, momentum: float = 0.0, nesterov: bool = False, **kw) -> None:
        super().__init__(params, grads, **kw)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        if nesterov and not self.momentum:
            raise ValueError("nesterov needs momentum > 0")
        self.nesterov = bool(nesterov)

    def scalars(self, lr):
        self.t += 1
        return (lr,)

    def fused_update(self, step):
        kernels.sgd(self.backend, self.params, self.grads, self.velocity, self.table, step, self.n_decayed,
                    self.weight_decay, self.momentum, self.nesterov)

    def apply(self, lr, part=None):
        part, (p, g, tmp), w = self._parts(part)
        self._coupled_decay(p, g, tmp, w)
        v = self.velocity[part]
        if not self.momentum:
            self.backend.xp.multiply(g, lr, out=tmp)
        else:
            v *= self.momentum
            v += g
            if self.nesterov:
                self.backend.xp.multiply(v, self.momentum, out=tmp)
                tmp += g
                tmp *= lr
            else:
                self.backend.xp.multiply(v, lr, out=tmp)
        p -= tmp


class Adam(Optimizer):
    """Kingma & Ba 2015:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        p -= lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

    Kept as m' = m / (1 - b1) and v' = v / (1 - b2), so each moment update is
    `m' = b1 m' + g` (two passes, not three), and every constant - bias
    corrections and the (1 - b) factors - folds into two scalars:

        p -= s * m' / (sqrt(v') + e),  s = lr (1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)),
                                       e = eps * sqrt((1 - b2^t) / (1 - b2))

    which is the textbook update exactly (up to float rounding): ten passes over
    the flat buffer per step. `weight_decay` is coupled L2 (added to the
    gradient), as in most Adam implementations (torch.optim.Adam's weight_decay); the paper
    has no weight decay.
    """

    state_names = ("m", "v")  # the scaled moments m' and v'
    decoupled = False

    def __init__(self, params, grads, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, **kw) -> None:
        super().__init__(params, grads, **kw)
        self.beta1 = _check("beta1", beta1, 0.0, 1.0)
        self.beta2 = _check("beta2", beta2, 0.0, 1.0)
        self.eps = _check("eps", eps, 0.0, low_open=True)

    width = 3

    def scalars(self, lr):
        """(1 - lr * wd, s, e) of the next step."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        root = math.sqrt((1.0 - b2 ** self.t) / (1.0 - b2))
        return 1.0 - lr * self.weight_decay, lr * (1.0 - b1) / (1.0 - b1 ** self.t) * root, self.eps * root

    def fused_update(self, step):
        kernels.adam(self.backend, self.params, self.grads, self.m, self.v, self.table, step, self.n_decayed,
                     self.beta1, self.beta2, self.weight_decay, self.decoupled)

    def apply(self, decay, s, e, part=None):
        xp = self.backend.xp
        part, (p, g, tmp), w = self._parts(part)
        if self.decoupled and self.weight_decay:  # AdamW: p *= 1 - lr * wd (weights only)
            p[w] *= decay
        elif not self.decoupled:
            self._coupled_decay(p, g, tmp, w)
        m, v = self.m[part], self.v[part]
        m *= self.beta1
        m += g
        v *= self.beta2
        xp.multiply(g, g, out=tmp)
        v += tmp
        xp.sqrt(v, out=tmp)
        tmp += e
        xp.divide(m, tmp, out=tmp)
        tmp *= s
        p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): before the
    Adam step, p -= lr * weight_decay * p for the weights."""

    decoupled = True


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


# -- learning-rate schedules -------------------------------------------------
class Schedule:
    """lr(t) for optimiser step t = 0, 1, ...; linear warm-up over `warmup` steps
    (from lr/warmup up to lr), then the shape of the subclass."""

    def __init__(self, lr: float, total_steps: int, warmup: int = 0) -> None:
        self.lr = _check("lr", lr, 0.0, low_open=True)
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int (got {total_steps!r})")
        if not isinstance(warmup, int) or not 0 <= warmup < total_steps:
            raise ValueError(f"warm-up steps must be in [0, {total_steps}) (got {warmup!r})")
        self.total, self.warmup = total_steps, warmup

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.lr * (t + 1) / self.warmup
        return self.after_warmup(t - self.warmup, self.total - self.warmup)

    def after_warmup(self, t: int, n: int) -> float:
        return self.lr


class Constant(Schedule):
    pass


class StepDecay(Schedule):
    """lr * gamma ** (t // step_size), t counted from the end of the warm-up: with one warm-up
    epoch and step_size 5 epochs, the first decay comes after epoch 6, not 5."""

    def __init__(self, lr, total_steps, warmup=0, step_size: int = 1, gamma: float = 0.1) -> None:
        super().__init__(lr, total_steps, warmup)
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive int (got {step_size!r})")
        self.step_size, self.gamma = step_size, _check("gamma", gamma, 0.0, 1.0, low_open=True)

    def after_warmup(self, t, n):
        return self.lr * self.gamma ** (t // self.step_size)


class Cosine(Schedule):
    """min_lr + (lr - min_lr) * (1 + cos(pi * t / n)) / 2 for t = 0 .. n - 1 after the warm-up:
    from lr down towards min_lr, one step short of it at the last step."""

    def __init__(self, lr, total_steps, warmup=0, min_lr: float = 0.0) -> None:
        super().__init__(lr, total_steps, warmup)
        self.min_lr = _check("min_lr", min_lr, 0.0, self.lr + 1e-300)

    def after_warmup(self, t, n):
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / n))


SCHEDULES: dict[str, type[Schedule]] = {"constant": Constant, "step": StepDecay, "cosine": Cosine}
