"""The training schedule of speculative backpropagation, shared by every arithmetic.

This module owns the algorithm of ``shared/docs/ALGORITHM.md`` (per-label stash, speculative
backward pass, threshold compare, accept or fall back, batch update); the arithmetic objects in
:mod:`golden.float_model` and :mod:`golden.fixed_model` own the numbers. Keeping the schedule in
one place means the float and the bit-exact fixed-point models cannot drift apart.

Vectorisation. Weights change only at batch boundaries, so all forward passes of a batch are one
matrix product. The stash is replaced by every sample whatever the decision, so "the most recent
earlier sample of the same label" is fixed by the labels alone; the decisions of a batch can
therefore be taken together, and the backward passes of a batch, each over its own sample or over
the stashed one, are again one matrix product per layer. Gradients are sums, so the result is
the sample-by-sample algorithm; in fixed point the sums are exact integers and the result is
identical bit for bit, in float up to the order of additions.
"""

from dataclasses import dataclass, field

import time

import numpy as np

__all__ = ["EpochStats", "TrainResult", "Stash", "train", "evaluate"]

# Step kinds, as recorded in a trace.
NOT_ATTEMPTED, ACCEPTED, REJECTED = 0, 1, 2


@dataclass
class EpochStats:
    """Figures of one epoch. Fractions are of the epoch's training steps."""

    epoch: int
    test_accuracy: float
    train_accuracy: float
    loss: float
    accepted: float
    rejected: float
    not_attempted: float
    steps: int
    seconds: float

    def as_dict(self):
        return dict(self.__dict__)


@dataclass
class Stash:
    """Per-label stash: the latest sample of each label and its forward results.

    ``x`` holds raw uint8 pixels; ``acts`` and ``pos`` the hidden activations and derivative
    selectors (pre-activation > 0), one array per hidden layer; ``y`` the softmax output.
    Row ``L`` belongs to label ``L`` and is meaningful only where ``valid[L]``.
    """

    x: np.ndarray
    acts: list
    pos: list
    y: np.ndarray
    valid: np.ndarray

    @classmethod
    def empty(cls, layers, act_dtype, y_dtype):
        classes = layers[-1]
        return cls(x=np.zeros((classes, layers[0]), np.uint8),
                   acts=[np.zeros((classes, n), act_dtype) for n in layers[1:-1]],
                   pos=[np.zeros((classes, n), bool) for n in layers[1:-1]],
                   y=np.zeros((classes, classes), y_dtype),
                   valid=np.zeros(classes, bool))


@dataclass
class TrainResult:
    params: list
    epochs: list = field(default_factory=list)
    stash: Stash = None
    trace: dict = None
    grads: list = None      # accumulators of a batch left open (``close=False``)


def _previous_same_label(labels, valid, classes):
    """Pool index of the most recent earlier sample with each sample's label.

    The pool is the stash (rows ``0..classes-1``) followed by the batch (rows ``classes + j``);
    -1 where the label has no earlier sample. Also returns, per label, the pool row that holds
    its stash entry after the batch.
    """
    last = np.where(valid, np.arange(classes), -1)
    prev = np.empty(len(labels), np.int64)
    for j, label in enumerate(labels.tolist()):
        prev[j] = last[label]
        last[label] = classes + j
    return prev, last


def train(arith, cfg, data, *, epochs=None, trace=False, on_epoch=None, on_batch=None,
          close=True):
    """Train with ``arith`` on ``data`` under ``cfg``; returns a :class:`TrainResult`.

    Parameters
    ----------
    arith : golden.float_model.FloatArith or golden.fixed_model.FixedArith
        The arithmetic.
    cfg : golden.config.TrainConfig
    data : specbp_hw.data.Dataset
    epochs : int, optional
        Overrides ``cfg.epochs``.
    trace : bool
        Record, per training step, the kind (0 not attempted, 1 accepted, 2 rejected), the
        prediction of the forward pass and the label.
    on_epoch : callable, optional
        Called with each epoch's :class:`EpochStats` as soon as it is complete.
    on_batch : callable, optional
        Called as ``on_batch(params)`` after each batch's update, in order over all epochs.
    close : bool
        Apply the update of a final short batch at the end of the last epoch (the algorithm).
        With False that batch stays open and its accumulators are returned in
        ``result.grads``, to compare with hardware accumulators mid-batch.
    """
    epochs = cfg.epochs if epochs is None else epochs
    layers = cfg.layers
    classes = layers[-1]
    images, labels_all = data.train_images, data.train_labels
    if images.shape[1] != layers[0]:
        raise ValueError(f"The data has {images.shape[1]} inputs per sample, "
                         f"the network {layers[0]}")
    if labels_all.size and int(labels_all.max()) >= classes:
        raise ValueError(f"Label {int(labels_all.max())} is out of range for {classes} classes")
    params = arith.init_params(cfg)
    stash = Stash.empty(layers, arith.act_dtype, arith.y_dtype)
    n = len(labels_all)
    result = TrainResult(params=params, stash=stash)
    if trace:
        result.trace = {"kind": [], "prediction": [], "label": []}
    for epoch in range(epochs):
        t0 = time.perf_counter()
        counts = np.zeros(3, np.int64)
        loss_sum = 0.0
        correct = 0
        for start in range(0, n, cfg.batch):
            x = images[start:start + cfg.batch]
            labels = labels_all[start:start + cfg.batch].astype(np.int64)
            fwd = arith.forward(params, x)
            loss_sum += arith.loss_sum(fwd.y, labels)
            prediction = np.argmax(fwd.logits, axis=1)
            correct += int((prediction == labels).sum())

            prev, last = _previous_same_label(labels, stash.valid, classes)
            if not cfg.speculative:
                prev[:] = -1
            pool_x = np.concatenate([stash.x, x])
            pool_acts = [np.concatenate([s, a]) for s, a in zip(stash.acts, fwd.acts)]
            pool_pos = [np.concatenate([s, p]) for s, p in zip(stash.pos, fwd.pos)]
            pool_y = np.concatenate([stash.y, fwd.y])

            attempted = prev >= 0
            accept = np.zeros(len(labels), bool)
            if attempted.any():
                accept[attempted] = arith.accept(pool_y[prev[attempted]], fwd.y[attempted],
                                                 cfg.threshold)
            kind = np.where(accept, ACCEPTED, np.where(attempted, REJECTED, NOT_ATTEMPTED))
            counts += np.bincount(kind, minlength=3)
            if trace:
                result.trace["kind"].append(kind)
                result.trace["prediction"].append(prediction)
                result.trace["label"].append(labels)

            # An accepted step trains on the stashed sample of its label, any other on itself.
            src = np.where(accept, prev, classes + np.arange(len(labels)))
            grads = arith.backward(params, pool_x[src], [a[src] for a in pool_acts],
                                   [p[src] for p in pool_pos], pool_y[src], labels)
            if close or epoch < epochs - 1 or len(labels) == cfg.batch:
                params = arith.update(params, grads)
                if on_batch is not None:
                    on_batch(params)
            else:
                result.grads = grads

            keep = last >= 0
            rows = last[keep]
            stash.x[keep] = pool_x[rows]
            for s, a in zip(stash.acts, pool_acts):
                s[keep] = a[rows]
            for s, p in zip(stash.pos, pool_pos):
                s[keep] = p[rows]
            stash.y[keep] = pool_y[rows]
            stash.valid |= keep

        test_acc = evaluate(arith, params, data.test_images, data.test_labels)
        steps = max(n, 1)
        result.epochs.append(EpochStats(
            epoch=epoch + 1, test_accuracy=test_acc, train_accuracy=correct / steps,
            loss=loss_sum / steps, accepted=float(counts[ACCEPTED] / steps),
            rejected=float(counts[REJECTED] / steps),
            not_attempted=float(counts[NOT_ATTEMPTED] / steps),
            steps=n, seconds=time.perf_counter() - t0))
        if on_epoch is not None:
            on_epoch(result.epochs[-1])
    result.params = params
    if trace:
        result.trace = {k: np.concatenate(v) if v else np.zeros(0, np.int64)
                        for k, v in result.trace.items()}
    return result


def evaluate(arith, params, images, labels, *, chunk=10000):
    """Test accuracy (a fraction): argmax of the output against the labels."""
    if len(labels) == 0:
        return float("nan")
    correct = 0
    for start in range(0, len(labels), chunk):
        logits = arith.forward(params, images[start:start + chunk]).logits
        correct += int((np.argmax(logits, axis=1) == labels[start:start + chunk]).sum())
    return correct / len(labels)
