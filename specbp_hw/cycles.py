"""Cycle model of the training core: exact cycles of every step type from the parameters.

Checked against the RTL's per-step cycle counts and counters in ``tests/test_cycles.py``. The
terms follow the engines' structure (see their module docstrings):

- forward pass: every layer's ``cols * (rows + 1)`` weight words, a 3-cycle pipeline drain per
  layer, the softmax latency, one cycle per ``y`` word, 2 cycles of start/finish;
- backward pass: the stash fetch (one word per cycle), the deltas of the layers after the first
  (``rows * cols`` words each plus a drain of 3 cycles and one more per extra summing stage,
  ``CoreParams.delta_sum_stages``), one gradient sweep over all ``depth`` words,
  5 cycles of start/drain/finish;
- undo of a rejected speculation: one gradient sweep, ``depth + 4`` (one cycle between its
  start and its first word, in which the engine reads the second stash pixel word ahead);
- batch update: none when the batch's last backward pass is the step's own (serial, pipelined,
  or a speculative step that was not accepted): that pass is *fused* with the update, which
  takes each word's final sums from the sweep at no extra cycles. A batch that ends on an
  accepted speculation needs a separate update sweep of ``depth + 4`` cycles.

With ``skip_zeros`` (:class:`~specbp_hw.params.CoreParams`) a pass's first layer has the
sample's ``n`` stored (nonzero) words and the bias row instead of every row: the forward pass
takes ``rows(0) - n`` cycles fewer and 2 more (filling its read-ahead), the backward pass and
the undo ``rows(0) - n`` fewer and 3 and 2 more; no pass is fused, so every batch ends with an
update sweep. The cycles of a step then depend on its sample and on the sample its backward
pass reads (the label's stash entry, or the previous sample when pipelined): pass the samples'
labels and stored words to :meth:`CycleModel.step_cycles`.

With ``fmax_stages`` (registered read addresses and the stages after them) a forward pass
takes one cycle more per layer and one in the softmax, a backward pass two more per delta
layer, and an update sweep three more (its registered start, its clip in two stages, and its
new weights registered before their write).

MAC bounds (the issue's F* and B*): the multiply-accumulates of a pass divided by the ``K x N``
multipliers of its engine; the backward pass has the gradient outer products of every layer and
the error products of every layer after the first.
"""

from dataclasses import dataclass

import numpy as np

from . import softmax
from .params import CoreParams

__all__ = ["CycleModel", "softmax_latency", "stored_words"]


def stored_words(params, images):
    """Words of each image (rows of ``layers[0]`` uint8 pixels) that a ``skip_zeros`` core
    stores: its first-layer rows (K pixels each) with a nonzero pixel."""
    images = np.asarray(images)
    K = params.inputs
    return (images.reshape(len(images), params.rows(0), K) != 0).any(axis=2).sum(axis=1)


def softmax_latency(params):
    """The core's softmax latency (:func:`specbp_hw.softmax.softmax_latency`)."""
    return softmax.softmax_latency(params.fmt, params.classes, ways=params.softmax_ways,
                                   div_bits=params.softmax_div_bits,
                                   table_stage=params.fmax_stages)


@dataclass(frozen=True)
class CycleModel:
    """Cycle counts of one core configuration."""

    params: CoreParams

    # -- engines -----------------------------------------------------------------------------

    def _skipped(self, n):
        # First-layer rows not issued for a sample of n stored words (skip_zeros).
        p = self.params
        if n is None:
            n = p.rows(0)
        if not p.skip_zeros:
            if n != p.rows(0):
                raise ValueError("stored words other than rows(0) need skip_zeros")
            return 0
        if not 0 <= n <= p.rows(0):
            raise ValueError(f"stored words must be 0..{p.rows(0)}, not {n}")
        return p.rows(0) - n

    def forward_cycles(self, n=None):
        """A forward pass over a sample of ``n`` stored words (default: all ``rows(0)``)."""
        p = self.params
        words = sum(p.cols(l) * (p.rows(l) + 1) for l in range(p.n_layers))
        fill = 2 if p.skip_zeros else 0
        # Each layer drains three stages (operands, products, sums) before the next, and with
        # fmax_stages one more (the words).
        drain = 3 + p.fmax_stages
        return (words - self._skipped(n) + fill + drain * p.n_layers + softmax_latency(p)
                + p.cols(p.n_layers - 1) + 2)

    def backward_cycles(self, n=None):
        """A backward pass (fetch, deltas, gradients) over a slot of ``n`` stored words."""
        p = self.params
        drain = 2 + p.delta_sum_stages + 2 * p.fmax_stages
        deltas = sum(p.rows(l) * p.cols(l) + drain for l in range(1, p.n_layers))
        fill = 3 if p.skip_zeros else 0
        return p.act_words_per_slot + deltas + p.depth - self._skipped(n) + fill + 5

    def undo_cycles(self, n=None):
        """An undo (gradients subtracted) over a slot of ``n`` stored words."""
        fill = 2 if self.params.skip_zeros else 0
        return self.params.depth - self._skipped(n) + fill + 4

    @property
    def forward(self):
        return self.forward_cycles()

    @property
    def backward(self):
        return self.backward_cycles()

    @property
    def undo(self):
        return self.undo_cycles()

    @property
    def update(self):
        return self.params.depth + 4 + 3 * self.params.fmax_stages

    # -- steps (from taking the sample to emitting its result; the update is separate) -------

    @property
    def serial_step(self):
        return self.forward + self.backward + 1

    @property
    def accepted_step(self):
        return max(self.forward, self.backward) + 1

    @property
    def rejected_step(self):
        return max(self.forward, self.backward) + 1 + self.undo + self.backward

    @property
    def pipelined_first_step(self):
        """First step of a batch: nothing pending for the backward engine."""
        return self.forward + 1

    @property
    def pipelined_step(self):
        return max(self.forward, self.backward) + 1

    @property
    def pipelined_last_step(self):
        """Last step of a batch: its own backward pass drains the pipeline."""
        return max(self.forward, self.backward) + self.backward + 1

    def step_cycles(self, schedule, kinds, batch, labels=None, words=None):
        """Predicted cycles of each step, given each step's kind (0 not attempted, 1 accepted,
        2 rejected) as the result stream reports them, and the batch size. With
        ``skip_zeros`` also each sample's label and stored words (:func:`stored_words`)."""
        n = len(kinds)
        if self.params.skip_zeros:
            if labels is None or words is None or len(labels) != n or len(words) != n:
                raise ValueError("skip_zeros: step_cycles needs every sample's label and "
                                 "stored words")
        else:
            words = [None] * n
        fwd, bwd, undo = self.forward_cycles, self.backward_cycles, self.undo_cycles
        stash = {}          # label -> stored words of its latest sample
        out = []
        pos = 0
        for i, kind in enumerate(kinds):
            last = pos + 1 >= batch or i == n - 1
            w = words[i]
            serial = fwd(w) + bwd(w) + 1
            if schedule == "pipelined":
                prev = words[i - 1] if pos else None
                if pos == 0 and last:
                    out.append(serial)
                elif pos == 0:
                    out.append(fwd(w) + 1)
                elif last:
                    out.append(max(fwd(w), bwd(prev)) + bwd(w) + 1)
                else:
                    out.append(max(fwd(w), bwd(prev)) + 1)
            elif kind in (1, 2):
                s = stash.get(labels[i]) if labels is not None else None
                both = max(fwd(w), bwd(s)) + 1
                out.append(both if kind == 1 else both + undo(s) + bwd(w))
            else:
                out.append(serial)
            if labels is not None:
                stash[labels[i]] = w
            pos = 0 if last else pos + 1
        return out

    def update_cycles(self, kinds, batch):
        """Cycles of separate update sweeps in a run: one per batch that ends on an accepted
        speculation (every other batch is updated by its fused last pass); with
        ``skip_zeros`` one per batch."""
        n = len(kinds)
        ends = [min(i + batch, n) - 1 for i in range(0, n, batch)]
        if self.params.skip_zeros:
            return self.update * len(ends)
        return sum(self.update for i in ends if kinds[i] == 1)

    # -- MAC bounds ----------------------------------------------------------------------------

    @property
    def macs_per_cycle(self):
        return self.params.inputs * self.params.lanes

    @property
    def f_star(self):
        ls = self.params.layers
        return sum(a * b for a, b in zip(ls[:-1], ls[1:])) / self.macs_per_cycle

    @property
    def b_star(self):
        ls = self.params.layers
        grads = sum(a * b for a, b in zip(ls[:-1], ls[1:]))
        errors = sum(a * b for a, b in zip(ls[1:-1], ls[2:]))
        return (grads + errors) / self.macs_per_cycle

    def data_epoch_cycles(self, schedule, labels, words, batch=15):
        """Cycles of one pass over the samples with these labels and stored words, steps and
        update sweeps, every speculation accepted (a label's first sample: not attempted)."""
        n = len(labels)
        if schedule == "speculative":
            seen, kinds = set(), []
            for label in labels:
                kinds.append(1 if label in seen else 0)
                seen.add(label)
        else:
            kinds = [0] * n
        return (sum(self.step_cycles(schedule, kinds, batch, labels, words))
                + self.update_cycles(kinds, batch))

    def epoch_cycles(self, schedule, samples=60000, batch=15, accept_rate=1.0):
        """Projected cycles of an epoch: steps plus updates, ``accept_rate`` of the steps
        accepted (speculative; the rest rejected, the first of each label aside)."""
        full, rest = divmod(samples, batch)
        batches = [batch] * full + ([rest] if rest else [])
        total = 0
        for b in batches:
            if schedule == "pipelined":
                total += self.serial_step if b == 1 else (
                    self.pipelined_first_step + (b - 2) * self.pipelined_step
                    + self.pipelined_last_step)
            elif schedule == "speculative":
                total += b * (accept_rate * self.accepted_step
                              + (1 - accept_rate) * self.rejected_step)
                total += accept_rate * self.update    # batches ending on an accepted step
            else:
                total += b * self.serial_step
        return total
