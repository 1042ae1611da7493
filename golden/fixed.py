"""Fixed-point formats and the integer primitives of the hardware arithmetic.

This module is the specification shared by the bit-exact model (:mod:`golden.fixed_model`), the
gateware and the tests. Every value is an integer ``v`` standing for ``v * 2**-frac``; every
narrowing step is one of the two roundings below followed by saturation to the destination
width. ``docs/FIXED_POINT.md`` describes the whole datapath in words.

Rounding
--------
- *nearest*: ``round_shift(v, s) = (v + 2**(s-1)) >> s`` (arithmetic shift, i.e. floor), so
  ties go towards plus infinity. This is the hardware's "add half, drop the bits".
- *stochastic* (weight update only): ``(v + r) >> s`` with ``r`` uniform on ``[0, 2**s)`` from
  :class:`Lfsr32`, so that ``E[result] = v / 2**s`` exactly.
"""

from dataclasses import dataclass, replace
import math

import numpy as np

__all__ = ["Q", "FixedFormat", "Lfsr32", "round_shift", "saturate", "exp2_table",
           "LOG2E_FRAC", "LOG2E"]


def round_shift(v, s):
    """Shift ``v`` right by ``s`` bits rounding to nearest, ties up; left when ``s < 0``.

    Works on Python ints and int64 arrays alike.
    """
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << (-s)


def saturate(v, lo, hi):
    """Clamp ``v`` to ``[lo, hi]`` (ints or int64 arrays)."""
    if isinstance(v, np.ndarray):
        return np.clip(v, lo, hi)
    return min(max(v, lo), hi)


@dataclass(frozen=True)
class Q:
    """A two's complement fixed-point format: ``width`` bits of which ``frac`` are fraction.

    Parameters
    ----------
    width : int
        Total bits, sign included (2..48).
    frac : int
        Fraction bits, ``0 <= frac < width``.
    """

    width: int
    frac: int

    def __post_init__(self):
        if not isinstance(self.width, int) or not 2 <= self.width <= 48:
            raise ValueError(f"Width must be an integer from 2 to 48, not {self.width!r}")
        if not isinstance(self.frac, int) or not 0 <= self.frac < self.width:
            raise ValueError(f"Fraction bits must be an integer from 0 to width-1 "
                             f"({self.width - 1}), not {self.frac!r}")

    @property
    def min(self):
        return -(1 << (self.width - 1))

    @property
    def max(self):
        return (1 << (self.width - 1)) - 1

    @property
    def int_bits(self):
        """Integer bits, sign excluded."""
        return self.width - 1 - self.frac

    def saturate(self, v):
        return saturate(v, self.min, self.max)

    def narrow(self, v, frac_in):
        """Round ``v`` (with ``frac_in`` fraction bits) to nearest in this format, saturating."""
        return self.saturate(round_shift(v, frac_in - self.frac))

    def __str__(self):
        return f"s{self.int_bits}.{self.frac}"


# log2(e) as an unsigned constant with 14 fraction bits: 23637 / 2**14 = 1.44269...
LOG2E_FRAC = 14
LOG2E = round(math.log2(math.e) * (1 << LOG2E_FRAC))


def exp2_table(index_bits, frac):
    """``T[f] = round(2**(-f / 2**index_bits) * 2**frac)`` for ``f`` in ``0 .. 2**index_bits-1``.

    Exact, independent of the host's libm: a float64 estimate is corrected with integer
    arithmetic. With ``n = 2**index_bits``, ``t`` is the rounded value exactly when
    ``(2t - 1)**n <= 2**(n*(frac+1) - f) < (2t + 1)**n`` (no ties: the value is irrational for
    ``0 < f < n``).
    """
    n = 1 << index_bits
    table = np.empty(n, np.int64)
    for f in range(n):
        target = 1 << (n * (frac + 1) - f)
        t = round(2.0 ** (-f / n) * (1 << frac))
        while (2 * t - 1) ** n > target:
            t -= 1
        while (2 * t + 1) ** n <= target:
            t += 1
        table[f] = t
    return table


class Lfsr32:
    """The stochastic-rounding random source: a 32-bit maximal-length Galois LFSR.

    Polynomial x^32 + x^22 + x^2 + x + 1 (feedback mask ``0x80200003``), shifting right: one
    step is ``s = (s >> 1) ^ (0x80200003 if s & 1 else 0)``. Each parameter of an update
    consumes :attr:`STEPS` steps and uses the low bits of the state after them. Parameters are
    visited in canonical order (layer by layer; the weight matrix ``n_in x n_out`` row-major,
    then the bias vector) and the state carries on from one update to the next. The state
    sequence is a linear map over GF(2), so hardware with several update lanes can compute the
    state ``k`` parameters ahead with a fixed XOR network; :meth:`states` does the same in numpy.

    Parameters
    ----------
    seed : int
        Initial state, a nonzero 32-bit integer.
    """

    MASK = 0x80200003
    STEPS = 32

    def __init__(self, seed=0xACE1ACE1):
        if not isinstance(seed, int) or not 0 < seed < (1 << 32):
            raise ValueError(f"LFSR seed must be a nonzero 32-bit integer, not {seed!r}")
        self.state = seed
        self._jump_cache = {}

    @classmethod
    def step(cls, s, n=1):
        """Advance the state ``s`` by ``n`` single steps (reference implementation)."""
        for _ in range(n):
            s = (s >> 1) ^ (cls.MASK if s & 1 else 0)
        return s

    def _columns(self, count):
        # cols[b][k] = the state reached from the unit state (1 << b) after (k+1)*STEPS steps.
        cols = self._jump_cache.get(count)
        if cols is None:
            cols = np.empty((32, count), np.uint32)
            for b in range(32):
                s = 1 << b
                for k in range(count):
                    s = self.step(s, self.STEPS)
                    cols[b, k] = s
            self._jump_cache = {count: cols}
        return cols

    def states(self, count):
        """The next ``count`` per-parameter states (uint32 array) and advance past them."""
        cols = self._columns(count)
        out = np.zeros(count, np.uint32)
        s = self.state
        for b in range(32):
            if s >> b & 1:
                out ^= cols[b]
        self.state = int(out[-1])
        return out


@dataclass(frozen=True)
class FixedFormat:
    """Every number format and arithmetic choice of the fixed-point datapath.

    Parameters
    ----------
    weight : Q
        Weights and biases (one memory holds both); a multiplier operand.
    act : Q
        Pre-activations and activations of every layer, the output logits included; a
        multiplier operand.
    delta : Q
        Back-propagated errors and deltas of the hidden layers; a multiplier operand.
    prob_frac : int
        Fraction bits of the softmax output ``y``, unsigned below 1; the output error
        ``y - onehot`` is then signed with the same fraction bits and ``prob_frac + 1`` bits.
    leak_shift : int
        Leaky-ReLU slope ``2**-leak_shift`` (7: 0.0078, the paper uses 0.01).
    exp_index_bits : int
        The softmax's ``2**-f`` table has ``2**exp_index_bits`` entries.
    exp_frac : int
        Fraction bits of the table entries and of the exponentials.
    recip_frac : int
        The reciprocal of the exponentials' sum is ``floor(2**(exp_frac + recip_frac) / S)``.
    update : Q
        The clipped accumulated gradient is rounded to this format before the multiply by the
        learning rate; a multiplier operand.
    lr_frac : int
        The learning rate is ``round(lr * 2**lr_frac)``.
    rounding : str
        Rounding of the weight update: ``"nearest"`` or ``"stochastic"``.
    lfsr_seed : int
        Initial state of :class:`Lfsr32` for stochastic rounding.
    max_batch : int
        Largest batch the gradient accumulators are sized for (their widths are derived so that
        they can never overflow: the sums are exact, in any order).
    """

    weight: Q = Q(16, 13)
    act: Q = Q(16, 9)
    delta: Q = Q(16, 12)
    prob_frac: int = 15
    leak_shift: int = 7
    exp_index_bits: int = 8
    exp_frac: int = 16
    recip_frac: int = 17
    update: Q = Q(16, 12)
    lr_frac: int = 16
    rounding: str = "nearest"
    lfsr_seed: int = 0xACE1ACE1
    max_batch: int = 64

    # The input pixel p (uint8) stands for p / 255; in hardware x = p + (p >> 7), u0.8, which
    # is round(p * 256 / 255) exactly (p / 255 is never a tie).
    PIXEL_FRAC = 8
    PIXEL_MAX = 256

    def __post_init__(self):
        for name in ("weight", "act", "delta", "update"):
            if not isinstance(getattr(self, name), Q):
                raise TypeError(f"{name} must be a Q format, not {getattr(self, name)!r}")
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(f"Rounding must be 'nearest' or 'stochastic', not "
                             f"{self.rounding!r}")
        for name, lo, hi in (("prob_frac", 4, 24), ("leak_shift", 1, 16),
                             ("exp_index_bits", 2, 12), ("exp_frac", 8, 24),
                             ("recip_frac", 8, 24), ("lr_frac", 4, 24),
                             ("max_batch", 1, 1 << 16)):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {v!r}")
        Lfsr32(self.lfsr_seed)  # validates the seed
        if self.update.frac + self.lr_frac < self.weight.frac:
            raise ValueError("update.frac + lr_frac must be at least weight.frac")

    def replace(self, **changes):
        return replace(self, **changes)

    @classmethod
    def uniform(cls, width, **changes):
        """Every datapath value at ``width`` bits (8..24) with the default formats' integer
        bits: weights ``Q(width, width - 3)``, activations ``Q(width, width - 7)``, deltas and
        update ``Q(width, width - 4)``, ``y`` with ``width - 1`` fraction bits, exponentials
        and reciprocal with ``max(8, width)`` and ``max(8, width + 1)``. ``uniform(16)`` is
        the default format. ``changes`` as for :meth:`replace`."""
        if not isinstance(width, int) or not 8 <= width <= 24:
            raise ValueError(f"Uniform width must be an integer from 8 to 24, not {width!r}")
        kwargs = dict(weight=Q(width, width - 3), act=Q(width, width - 7),
                      delta=Q(width, width - 4), update=Q(width, width - 4),
                      prob_frac=width - 1, exp_frac=max(8, width),
                      recip_frac=max(8, width + 1))
        return cls(**{**kwargs, **changes})

    # -- derived formats ---------------------------------------------------------------------

    @property
    def prob(self):
        """Softmax output ``y`` and output error format (signed, ``prob_frac + 1`` bits)."""
        return Q(self.prob_frac + 1, self.prob_frac)

    def input_frac(self, layer):
        """Fraction bits of the inputs of weight layer ``layer`` (0 = first)."""
        return self.PIXEL_FRAC if layer == 0 else self.act.frac

    def input_max(self, layer):
        """Largest magnitude of an input of weight layer ``layer``."""
        return self.PIXEL_MAX if layer == 0 else -self.act.min

    def error_fmt(self, layer, n_layers):
        """Format of the error/delta at the output of weight layer ``layer``."""
        return self.prob if layer == n_layers - 1 else self.delta

    def grad_frac(self, layer, n_layers):
        """Fraction bits of the weight-gradient accumulators of ``layer`` (exact products)."""
        return self.input_frac(layer) + self.error_fmt(layer, n_layers).frac

    def grad_width(self, layer, n_layers, *, bias=False):
        """Accumulator width that holds ``max_batch`` worst-case products without overflow."""
        err = self.error_fmt(layer, n_layers)
        mag = -err.min * (1 if bias else self.input_max(layer)) * self.max_batch
        return mag.bit_length() + 1

    def lr_int(self, lr):
        """The learning rate as an integer with ``lr_frac`` fraction bits."""
        v = round(lr * (1 << self.lr_frac))
        if not 0 < v < (1 << self.update.width):
            raise ValueError(f"Learning rate {lr} is not representable with lr_frac="
                             f"{self.lr_frac} within {self.update.width} bits")
        return v

    def threshold_int(self, threshold, classes):
        """Threshold on ``sum |y_stash - y|`` in probability LSBs: ``round(classes*thr*2**F)``."""
        return round(threshold * classes * (1 << self.prob_frac))

    def describe(self):
        return (f"weights {self.weight} ({self.weight.width}b), activations {self.act}, "
                f"deltas {self.delta}, y u0.{self.prob_frac}, update {self.update}, "
                f"leak 2^-{self.leak_shift}, exp table 2^{self.exp_index_bits}x"
                f"{self.exp_frac + 1}b, {self.rounding} rounding")
