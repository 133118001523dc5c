"""Losses. SoftmaxCrossEntropy fuses softmax and cross-entropy (log-sum-exp)."""

from __future__ import annotations

from nn import kernels
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
    backward() -> dL/dlogits: (N, C) = (softmax - target) / N, target = onehot(labels), or
        (1 - smoothing) onehot(labels) + smoothing / C with label smoothing
    forward_backward / score: the same, for the fit loop, writing the batch's mean
    loss to losses[slot] and its count of correct predictions to correct[slot]
    (slot: a (1,) int array on the device, so a captured step can use it). On a GPU
    each is one kernel (nn.kernels.softmax_xent).

    Optional label smoothing puts `smoothing` of the target mass uniformly on
    all classes.
    """

    def __init__(self, backend: Backend = CPU, smoothing: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1) (got {smoothing!r})")
        self.backend, self.smoothing = backend, float(smoothing)

    def forward(self, logits, labels, total: int | None = None):
        """The mean loss; with `total`, the sum over these rows / total (a shard of a batch
        of `total` rows: the shards' values add up to the batch's mean, and so do their
        gradients)."""
        xp = self.backend.xp
        n, c = logits.shape
        n = self.n = total or n
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
        grad = self.probs - self.target
        grad *= grad.dtype.type(1.0 / self.n)
        return grad

    def forward_backward(self, logits, labels, losses, correct, slot, total: int | None = None):
        """Training: record the batch's loss and correct count; return dL/dlogits. `total`: as
        in `forward`, for a CPU shard of a batch (nn/shards.py; a GPU step is never cut)."""
        if self.backend.is_gpu:
            return kernels.softmax_xent(self.backend, logits, labels, self.smoothing, losses, correct, slot)
        self.score(logits, labels, losses, correct, slot, total)
        return self.backward()

    def score(self, logits, labels, losses, correct, slot, total: int | None = None) -> None:
        """Evaluation: record the batch's loss and correct count, no gradient."""
        if self.backend.is_gpu:
            kernels.softmax_xent(self.backend, logits, labels, self.smoothing, losses, correct, slot,
                                 want_grad=False)
            return
        i = int(slot[0])
        losses[i] = self.forward(logits, labels, total)
        correct[i] = (logits.argmax(axis=1) == labels).sum()
