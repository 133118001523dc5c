"""Losses. SoftmaxCrossEntropy fuses softmax and cross-entropy (log-sum-exp)."""

from __future__ import annotations

from nn.backend import CPU, Backend


def log_softmax(xp, logits):
    """Row-wise log softmax via log-sum-exp.   logits: (N, C)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(xp, logits):
    """Row-wise softmax, shifted by the row max so exp never overflows."""
    exp = xp.exp(logits - logits.max(axis=1, keepdims=True))
    exp /= exp.sum(axis=1, keepdims=True)
    return exp


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels.

    forward(logits: (N, C), labels: (N,) ints) -> 0-d array (stays on the device)
    backward() -> dL/dlogits: (N, C) = (softmax - onehot(labels)) / N

    Optional label smoothing puts `smoothing` of the target mass uniformly on
    all classes.
    """

    def __init__(self, backend: Backend = CPU, smoothing: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1) (got {smoothing!r})")
        self.backend, self.smoothing = backend, float(smoothing)

    def forward(self, logits, labels):
        xp = self.backend.xp
        n, c = logits.shape
        log_probs = log_softmax(xp, logits)
        self.probs = xp.exp(log_probs)
        self.labels = labels
        rows = xp.arange(n)
        picked = log_probs[rows, labels]
        if self.smoothing:
            s = self.smoothing
            loss = -((1 - s) * picked.sum() + (s / c) * log_probs.sum()) / n
        else:
            loss = -picked.sum() / n
        return loss

    def backward(self):
        xp = self.backend.xp
        n, c = self.probs.shape
        grad = self.probs.copy()
        if self.smoothing:
            grad -= grad.dtype.type(self.smoothing / c)
            grad[xp.arange(n), self.labels] -= grad.dtype.type(1 - self.smoothing)
        else:
            grad[xp.arange(n), self.labels] -= 1
        grad *= grad.dtype.type(1.0 / n)
        return grad
