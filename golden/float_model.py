"""Float64 golden model: the arithmetic of ``shared/docs/ALGORITHM.md`` in plain numpy.

Input ``x = pixel / 255``; hidden layers leaky ReLU; softmax output; output error
``y - onehot(label)``; summed gradients clipped to ``[-clip, clip]``; ``w -= lr * clip(G)``.
The schedule (stash, speculation, batches) lives in :mod:`golden.train`.
"""

from dataclasses import dataclass

import numpy as np

from .config import init_params

__all__ = ["FloatArith", "Forward"]


@dataclass
class Forward:
    """Results of a batch of forward passes.

    ``acts`` and ``pos`` hold, per hidden layer, the activations and the derivative selectors
    (pre-activation > 0); ``logits`` the output pre-activations (the prediction is their
    argmax, first index on ties); ``y`` the softmax output.
    """

    acts: list
    pos: list
    logits: np.ndarray
    y: np.ndarray


class FloatArith:
    """Float64 arithmetic for :func:`golden.train.train`.

    Parameters
    ----------
    cfg : golden.config.TrainConfig
    """

    act_dtype = np.float64
    y_dtype = np.float64

    def __init__(self, cfg):
        self.cfg = cfg

    def init_params(self, cfg):
        return [(w / 100.0, b / 100.0) for w, b in init_params(cfg.layers, cfg.seed)]

    def forward(self, params, x):
        a = x.astype(np.float64) / 255.0
        acts, pos = [], []
        for w, b in params[:-1]:
            z = a @ w + b
            p = z > 0
            a = np.where(p, z, self.cfg.leak * z)
            acts.append(a)
            pos.append(p)
        w, b = params[-1]
        logits = a @ w + b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return Forward(acts=acts, pos=pos, logits=logits, y=e / e.sum(axis=1, keepdims=True))

    def loss_sum(self, y, labels):
        return float(-np.log(np.maximum(y[np.arange(len(labels)), labels], 1e-300)).sum())

    def accept(self, y_stash, y, threshold):
        return np.abs(y_stash - y).mean(axis=1) <= threshold

    def backward(self, params, x, acts, pos, y, labels):
        ins = [x.astype(np.float64) / 255.0] + list(acts)
        d = y.copy()
        d[np.arange(len(labels)), labels] -= 1.0
        grads = [None] * len(params)
        for layer in range(len(params) - 1, -1, -1):
            grads[layer] = (ins[layer].T @ d, d.sum(axis=0))
            if layer:
                e = d @ params[layer][0].T
                d = np.where(pos[layer - 1], e, self.cfg.leak * e)
        return grads

    def update(self, params, grads):
        lr, c = self.cfg.lr, self.cfg.clip
        return [(w - lr * np.clip(gw, -c, c), b - lr * np.clip(gb, -c, c))
                for (w, b), (gw, gb) in zip(params, grads)]
