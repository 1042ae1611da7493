"""Bit-exact fixed-point model: the integer arithmetic the hardware performs.

Every value is an int64 array holding a fixed-point integer in the formats of
:class:`golden.fixed.FixedFormat`; ``docs/FIXED_POINT.md`` gives the same definitions in words.
Matrix products run through float64 BLAS, which is exact here because every product and every
sum stays below 2**53 (checked against the formats' bounds in :class:`FixedArith`); the results
are converted back to int64. Gradient accumulators keep the exact products and are wide enough
never to overflow, so their sums do not depend on the order of accumulation.
"""

import numpy as np

from .config import init_params
from .fixed import FixedFormat, Lfsr32, LOG2E, LOG2E_FRAC, exp2_table, round_shift
from .float_model import Forward

__all__ = ["FixedArith", "pixels", "softmax", "forward_layer", "leaky"]

_EXACT = 1 << 53


def _imatmul(a, b):
    """Exact integer matrix product through float64 BLAS (operands bounded by the caller)."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def pixels(x):
    """uint8 pixels to the u0.8 input format: ``p + (p >> 7) = round(p * 256 / 255)``."""
    x = x.astype(np.int64)
    return x + (x >> 7)


def leaky(z, fmt):
    """Leaky ReLU: ``z`` where ``z > 0``, else ``z * 2**-leak_shift`` rounded to nearest."""
    return np.where(z > 0, z, round_shift(z, fmt.leak_shift))


def forward_layer(fmt, a, w, b, frac_in):
    """Pre-activations of one layer: ``(a @ w + b << frac_in)`` rounded to the act format."""
    acc = _imatmul(a, w) + (b << frac_in)
    return fmt.act.narrow(acc, frac_in + fmt.weight.frac)


def softmax(fmt, z):
    """Fixed-point softmax of output logits ``z`` (act format), rows of a 2-D array.

    1. ``t = max(z) - z >= 0``;
    2. ``v = round(t * LOG2E)`` with ``exp_index_bits`` fraction bits (``LOG2E`` has 14);
    3. ``n = v >> exp_index_bits``, ``f = v mod 2**exp_index_bits``;
       ``p = T[f] >> n`` (truncating), ``T`` from :func:`golden.fixed.exp2_table`; the row's
       maximum has ``p = 2**exp_frac`` exactly;
    4. ``S = sum(p)`` (so ``2**exp_frac <= S <= classes * 2**exp_frac``),
       ``R = floor(2**(exp_frac + recip_frac) / S)``;
    5. ``y = round(p * R)`` to ``prob_frac`` bits, saturated to ``2**prob_frac - 1``.
    Returns ``y`` (int64, ``prob_frac`` fraction bits).
    """
    ib = fmt.exp_index_bits
    t = z.max(axis=1, keepdims=True) - z
    v = round_shift(t * LOG2E, fmt.act.frac + LOG2E_FRAC - ib)
    n = np.minimum(v >> ib, 62)
    p = fmt_table(fmt)[v & ((1 << ib) - 1)] >> n
    s = p.sum(axis=1, keepdims=True)
    r = (1 << (fmt.exp_frac + fmt.recip_frac)) // s
    y = round_shift(p * r, fmt.exp_frac + fmt.recip_frac - fmt.prob_frac)
    return np.minimum(y, (1 << fmt.prob_frac) - 1)


_TABLES = {}


def fmt_table(fmt):
    key = (fmt.exp_index_bits, fmt.exp_frac)
    if key not in _TABLES:
        _TABLES[key] = exp2_table(*key)
    return _TABLES[key]


class FixedArith:
    """Bit-exact fixed-point arithmetic for :func:`golden.train.train`.

    Parameters
    ----------
    cfg : golden.config.TrainConfig
        ``leak`` is not used: the slope is ``2**-fmt.leak_shift``.
    fmt : golden.fixed.FixedFormat
    """

    act_dtype = np.int64
    y_dtype = np.int64

    def __init__(self, cfg, fmt=None):
        fmt = FixedFormat() if fmt is None else fmt
        if not isinstance(fmt, FixedFormat):
            raise TypeError(f"fmt must be a FixedFormat, not {fmt!r}")
        if cfg.batch > fmt.max_batch:
            raise ValueError(f"Batch size {cfg.batch} exceeds the format's max_batch "
                             f"{fmt.max_batch}, for which the accumulators are sized")
        self.cfg, self.fmt = cfg, fmt
        self.lr = fmt.lr_int(cfg.lr)
        layers = cfg.layers
        nl = len(layers) - 1
        self.grad_frac = [(fmt.grad_frac(l, nl), fmt.error_fmt(l, nl).frac) for l in range(nl)]
        # float64 products are exact when every partial sum stays below 2**53.
        wmax = -fmt.weight.min
        for l in range(nl):
            emax = -fmt.error_fmt(l, nl).min
            bounds = (fmt.input_max(l) * wmax * (layers[l] + 1) << fmt.input_frac(l),
                      fmt.input_max(l) * emax * fmt.max_batch,
                      emax * wmax * layers[l + 1])
            if max(bounds) >= _EXACT:
                raise ValueError("These formats are too wide for the model's exact float64 "
                                 "matrix products (a partial sum could reach 2**53)")
        for l in range(nl):
            if max(fmt.grad_width(l, nl), fmt.grad_width(l, nl, bias=True)) > 62:
                raise ValueError("Gradient accumulators would exceed 62 bits: narrow the formats "
                                 "or lower max_batch")
        if fmt.rounding == "stochastic" and self._update_shift() > 32:
            raise ValueError("Stochastic rounding drops more bits than the 32-bit LFSR gives: "
                             "lower update.frac + lr_frac - weight.frac to 32 or less")
        self.lfsr = Lfsr32(fmt.lfsr_seed)

    def _update_shift(self):
        return self.fmt.update.frac + self.fmt.lr_frac - self.fmt.weight.frac

    def init_params(self, cfg):
        """The paper's k/100 initial values, rounded to nearest in the weight format."""
        f = self.fmt.weight.frac
        self.lfsr = Lfsr32(self.fmt.lfsr_seed)
        # round(k * 2**f / 100), ties up, in exact integer arithmetic
        q = lambda k: self.fmt.weight.saturate((k * (1 << (f + 1)) + 100) // 200)
        return [(q(w), q(b)) for w, b in init_params(cfg.layers, cfg.seed)]

    def forward(self, params, x):
        fmt = self.fmt
        a, frac = pixels(x), fmt.PIXEL_FRAC
        acts, pos = [], []
        for w, b in params[:-1]:
            z = forward_layer(fmt, a, w, b, frac)
            p = z > 0
            a, frac = np.where(p, z, round_shift(z, fmt.leak_shift)), fmt.act.frac
            acts.append(a)
            pos.append(p)
        w, b = params[-1]
        logits = forward_layer(fmt, a, w, b, frac)
        return Forward(acts=acts, pos=pos, logits=logits, y=softmax(fmt, logits))

    def loss_sum(self, y, labels):
        p = np.maximum(y[np.arange(len(labels)), labels], 1) * 2.0 ** -self.fmt.prob_frac
        return float(-np.log(p).sum())

    def accept(self, y_stash, y, threshold):
        """Accept when ``sum |y_stash - y| <= round(classes * threshold * 2**prob_frac)``."""
        limit = self.fmt.threshold_int(threshold, y.shape[1])
        return np.abs(y_stash - y).sum(axis=1) <= limit

    def backward(self, params, x, acts, pos, y, labels):
        """Summed gradients of the batch: per layer ``(GW, Gb)`` as exact int64 accumulators."""
        fmt = self.fmt
        ins = [pixels(x)] + list(acts)
        d = y.copy()
        d[np.arange(len(labels)), labels] -= 1 << fmt.prob_frac
        frac = fmt.prob_frac
        grads = [None] * len(params)
        for layer in range(len(params) - 1, -1, -1):
            grads[layer] = (_imatmul(ins[layer].T, d), d.sum(axis=0))
            if layer:
                e = fmt.delta.narrow(_imatmul(d, params[layer][0].T), fmt.weight.frac + frac)
                d = np.where(pos[layer - 1], e, round_shift(e, fmt.leak_shift))
                frac = fmt.delta.frac
        return grads

    def update(self, params, grads):
        """``w <- sat(w - round(round(clip(G)) * lr))``, see ``docs/FIXED_POINT.md``."""
        fmt = self.fmt
        shift = self._update_shift()
        deltas = []
        for (gw, gb), (fw, fb) in zip(grads, self.grad_frac):
            for g, frac in ((gw, fw), (gb, fb)):
                c = round(self.cfg.clip * (1 << frac))
                gq = fmt.update.narrow(np.clip(g, -c, c), frac)
                deltas.append(gq * self.lr)
        if fmt.rounding == "stochastic":
            flat = np.concatenate([d.ravel() for d in deltas])
            r = (self.lfsr.states(flat.size) & np.uint32((1 << shift) - 1)).astype(np.int64)
            flat = (flat + r) >> shift
            sizes = np.cumsum([d.size for d in deltas])[:-1]
            deltas = [part.reshape(d.shape) for part, d in zip(np.split(flat, sizes), deltas)]
        else:
            deltas = [round_shift(d, shift) for d in deltas]
        out = []
        for i, (w, b) in enumerate(params):
            out.append((fmt.weight.saturate(w - deltas[2 * i]),
                        fmt.weight.saturate(b - deltas[2 * i + 1])))
        return out
