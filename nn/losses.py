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
        # the target distribution: one-hot (no scatter, so few kernel launches on a GPU)
        target = (labels[:, None] == xp.arange(c)).astype(logits.dtype)
        if self.smoothing:
            target *= logits.dtype.type(1 - self.smoothing)
            target += logits.dtype.type(self.smoothing / c)
        self.target = target
        return -(target * log_probs).sum() / n

    def backward(self):
        n = self.probs.shape[0]
        grad = self.probs - self.target
        grad *= grad.dtype.type(1.0 / n)
        return grad
