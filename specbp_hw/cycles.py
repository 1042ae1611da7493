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

MAC bounds (the issue's F* and B*): the multiply-accumulates of a pass divided by the ``K x N``
multipliers of its engine; the backward pass has the gradient outer products of every layer and
the error products of every layer after the first.
"""

from dataclasses import dataclass

from . import softmax
from .params import CoreParams

__all__ = ["CycleModel", "softmax_latency"]


def softmax_latency(params):
    """The core's softmax latency (:func:`specbp_hw.softmax.softmax_latency`)."""
    return softmax.softmax_latency(params.fmt, params.classes, ways=params.softmax_ways,
                                   div_bits=params.softmax_div_bits)


@dataclass(frozen=True)
class CycleModel:
    """Cycle counts of one core configuration."""

    params: CoreParams

    # -- engines -----------------------------------------------------------------------------

    @property
    def forward(self):
        p = self.params
        words = sum(p.cols(l) * (p.rows(l) + 1) for l in range(p.n_layers))
        return words + 3 * p.n_layers + softmax_latency(p) + p.cols(p.n_layers - 1) + 2

    @property
    def backward(self):
        p = self.params
        drain = 2 + p.delta_sum_stages
        deltas = sum(p.rows(l) * p.cols(l) + drain for l in range(1, p.n_layers))
        return p.act_words_per_slot + deltas + p.depth + 5

    @property
    def undo(self):
        return self.params.depth + 4

    @property
    def update(self):
        return self.params.depth + 4

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

    def step_cycles(self, schedule, kinds, batch):
        """Predicted cycles of each step, given each step's kind (0 not attempted, 1 accepted,
        2 rejected) as the result stream reports them, and the batch size."""
        out = []
        n = len(kinds)
        pos = 0
        for i, kind in enumerate(kinds):
            last = pos + 1 >= batch or i == n - 1
            if schedule == "pipelined":
                if pos == 0 and last:
                    out.append(self.serial_step)
                elif pos == 0:
                    out.append(self.pipelined_first_step)
                elif last:
                    out.append(self.pipelined_last_step)
                else:
                    out.append(self.pipelined_step)
            elif kind == 1:
                out.append(self.accepted_step)
            elif kind == 2:
                out.append(self.rejected_step)
            else:
                out.append(self.serial_step)
            pos = 0 if last else pos + 1
        return out

    def update_cycles(self, kinds, batch):
        """Cycles of separate update sweeps in a run: one per batch that ends on an accepted
        speculation (every other batch is updated by its fused last pass)."""
        n = len(kinds)
        ends = [min(i + batch, n) - 1 for i in range(0, n, batch)]
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
