# amaranth: UnusedElaboratable=no
"""The forward engine alone against golden.fixed_model's forward pass, exact integers."""

import numpy as np
import pytest
from amaranth.hdl import Array, Const, Module, Signal, signed, unsigned
from amaranth.lib import memory
from amaranth.sim import Simulator

from golden.config import TrainConfig
from golden.fixed import FixedFormat, Q, round_shift
from golden.fixed_model import FixedArith, pixels
from specbp_hw.arith import (clip_narrow, clip_operands, narrow_leaky, narrow_scaled, saturate,
                             sub_round_saturate, tree_sum)
from specbp_hw.cycles import CycleModel
from specbp_hw.forward import ForwardEngine
from specbp_hw.params import CoreParams
from specbp_hw.testing import pulse_and_wait


def run_forward(p, params, images):
    """Forward passes of ``images`` through the engine; stashed activations, y, prediction."""
    m = Module()
    m.submodules.fwd = fwd = ForwardEngine(p)
    m.submodules.weights = weights = memory.Memory(shape=p.weight_word, depth=p.depth,
                                                   init=p.pack_params(params))
    m.submodules.xbuf = xbuf = memory.Memory(shape=p.value_word, depth=p.xbuf_depth, init=[])
    m.submodules.acts = acts = memory.Memory(shape=p.act_word,
                                             depth=p.slots * p.act_words_per_slot, init=[])
    w_rd, x_rd, a_wr = weights.read_port(), xbuf.read_port(), acts.write_port()
    m.d.comb += [w_rd.addr.eq(fwd.w_rd.addr), fwd.w_rd.data.eq(w_rd.data),
                 x_rd.addr.eq(fwd.x_rd.addr), fwd.x_rd.data.eq(x_rd.data),
                 a_wr.addr.eq(fwd.act_wr.addr), a_wr.data.eq(fwd.act_wr.data),
                 a_wr.en.eq(fwd.act_wr.en)]
    out = []
    K, rows0, wps = p.inputs, p.rows(0), p.act_words_per_slot

    async def bench(ctx):
        for i, image in enumerate(images):
            half, slot = i % 2, i % p.slots
            for r in range(rows0):
                ctx.set(xbuf.data[half * rows0 + r],
                        [int(v) for v in pixels(image[r * K:(r + 1) * K])])
            ctx.set(fwd.half, half)
            ctx.set(fwd.slot, slot)
            ctx.set(fwd.stash, 1)
            cycles = await pulse_and_wait(ctx, fwd.start, fwd.done)
            words = [[int(v) for v in ctx.get(acts.data[slot * wps + w])] for w in range(wps)]
            out.append((words, [int(v) for v in ctx.get(fwd.y)], ctx.get(fwd.prediction),
                        cycles))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("layers, K, N, fmt, ways, div_bits", [
    ((16, 8, 8, 4), 2, 4, FixedFormat(max_batch=16), 1, 1),
    ((16, 8, 8, 4), 1, 8, FixedFormat(max_batch=16), 4, 2),
    ((24, 4, 8, 10), 4, 4, FixedFormat(max_batch=16), 10, 2),
    ((16, 8, 3), 8, 2, FixedFormat(weight=Q(14, 11), act=Q(12, 5), delta=Q(12, 9),
                                   prob_frac=11, exp_frac=12, recip_frac=14, exp_index_bits=6,
                                   update=Q(12, 8), max_batch=16), 1, 1),
    ((16, 8, 5), 2, 8, FixedFormat(weight=Q(18, 15), act=Q(18, 10), max_batch=16), 5, 3),
    # Integer weights: both narrowing shifts are below 1 (-1 and 0).
    ((16, 8, 5), 2, 4, FixedFormat(weight=Q(8, 0), max_batch=16), 1, 1),
])
@pytest.mark.parametrize("stages", [False, True])
def test_forward_engine_is_bit_exact(layers, K, N, fmt, ways, div_bits, stages):
    p = CoreParams(layers=layers, lanes=N, inputs=K, fmt=fmt, lr=0.05, softmax_ways=ways,
                   softmax_div_bits=div_bits, fmax_stages=stages)
    cfg = TrainConfig(layers=layers, seed=7, lr=0.05)
    arith = FixedArith(cfg, fmt)
    rng = np.random.default_rng(len(layers) + K + N)
    # Larger random weights than the initialisation, to reach saturation and negative logits.
    params = [(rng.integers(-3 << fmt.weight.frac, 3 << fmt.weight.frac, (a, b)),
               rng.integers(-1 << fmt.weight.frac, 1 << fmt.weight.frac, b))
              for a, b in zip(layers[:-1], layers[1:])]
    params = [(np.clip(w, fmt.weight.min, fmt.weight.max), b) for w, b in params]
    images = rng.integers(0, 256, size=(5, layers[0]), dtype=np.uint8)
    ref = arith.forward(params, images)
    got = run_forward(p, params, images)
    model = CycleModel(p)
    for i, (words, y, prediction, cycles) in enumerate(got):
        for l, a in enumerate(ref.acts):
            flat = [v for w in words[p.act_base(l):p.act_base(l) + p.act_words(l)] for v in w]
            assert flat[:layers[l + 1]] == a[i].tolist()
        assert y == ref.y[i].tolist()
        y_stashed = [v for w in words[p.act_base(p.n_layers - 1):] for v in w][:p.classes]
        assert y_stashed == ref.y[i].tolist()
        assert prediction == int(np.argmax(ref.logits[i]))
        assert cycles == model.forward   # start cycle to done cycle, inclusive


class _Depth:
    """Stands for a value in tree_sum: its sum's adder depth."""
    def __init__(self, depth=0):
        self.depth = depth

    def __add__(self, other):
        return _Depth(1 + max(self.depth, other.depth))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 11])
def test_tree_sum_is_the_exact_sum_at_log_depth(n):
    """tree_sum of n operands (unsigned 16-bit, like the speculation distance's terms, and
    signed) equals their sum at the extremes and at random values, ceil(log2 n) adders deep."""
    m = Module()
    us = [Signal(unsigned(16), name=f"u{i}") for i in range(n)]
    ss = [Signal(signed(9), name=f"s{i}") for i in range(n)]
    tu, ts = tree_sum(us), tree_sum(ss)
    assert tree_sum(_Depth() for _ in range(n)).depth == (n - 1).bit_length()
    got_u, got_s = Signal(tu.shape()), Signal(ts.shape())
    m.d.comb += [got_u.eq(tu), got_s.eq(ts)]
    rng = np.random.default_rng(n)
    cases = [([0xFFFF] * n, [-256] * n), ([0] * n, [255] * n)]
    cases += [(list(rng.integers(0, 1 << 16, n)), list(rng.integers(-256, 256, n)))
              for _ in range(50)]
    mismatches = []

    async def bench(ctx):
        for u, s_ in cases:
            for sig, x in zip(us + ss, u + s_):
                ctx.set(sig, int(x))
            if (ctx.get(got_u), ctx.get(got_s)) != (sum(map(int, u)), sum(map(int, s_))):
                mismatches.append((u, s_))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []
    with pytest.raises(ValueError, match="at least one value"):
        tree_sum([])


@pytest.mark.parametrize("width, s, q, leak", [
    (32, 13, Q(16, 9), 7),      # the paper format's stage 3 (layer 0 aligned to s = 13)
    (24, 12, Q(16, 9), 7),
    (20, 1, Q(8, 3), 1),
    (18, 5, Q(12, 5), 3),
])
def test_narrowings_are_saturate_of_round_then_leaky(width, s, q, leak):
    """The side-by-side forms (narrow_leaky of the forward pass, narrow_scaled of the
    backward pass) against one step after another, at every boundary (+-3) and at random
    values of the whole input range."""
    m = Module()
    v = Signal(signed(width))
    z, a, z2, zl = (Signal(signed(q.width)) for _ in range(4))
    z_v, a_v = narrow_leaky(m, v, s, q, leak, "t")
    z2_v, zl_v = narrow_scaled(m, v, s, q, leak, "u")
    m.d.comb += [z.eq(z_v), a.eq(a_v), z2.eq(z2_v), zl.eq(zl_v)]
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    half = 1 << (s - 1)
    step = 1 << (s + leak - 1)   # the leaked rounding's steps are at -half - step + 2j*step
    edges = [((q.max + 1) << s) - half, (q.min << s) - half, (1 << s) - half, 0, lo, hi,
             -half - step, -half + step]
    rng = np.random.default_rng(width + s)
    values = sorted({min(max(e + k, lo), hi) for e in edges for k in range(-3, 4)}
                    | {int(x) for x in rng.integers(lo, hi, 300)})
    mismatches = []

    async def bench(ctx):
        for x in values:
            ctx.set(v, x)
            ref_z = q.saturate(round_shift(x, s))
            ref_zl = round_shift(ref_z, leak)
            ref_a = ref_z if ref_z > 0 else ref_zl
            got = ctx.get(z), ctx.get(a), ctx.get(z2), ctx.get(zl)
            if got != (ref_z, ref_a, ref_z, ref_zl):
                mismatches.append((x, got, (ref_z, ref_a, ref_z, ref_zl)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []


def _update_cases(fracs, clip, q):
    return [(round(clip * (1 << f)), f - q.frac) for f in fracs]



@pytest.mark.parametrize("v_width, s, q", [
    (33, 21, Q(16, 12)),    # the paper format's update: 16-bit gradient x 16-bit rate
    (20, 4, Q(8, 3)),
    (12, 1, Q(12, 5)),      # a product no wider than the weights
    (10, 0, Q(8, 3)),       # aligned: no rounding
    (10, -2, Q(8, 3)),
])
def test_sub_round_saturate_is_one_step_after_another(v_width, s, q):
    """The update's one-subtraction form against round, subtract and saturate one after
    another (and the bit-tested ``saturate`` of the difference against clamping), at every
    boundary of the rounding and the saturation (+-3) and at random values."""
    m = Module()
    w, v = Signal(signed(q.width)), Signal(signed(v_width))
    out, sat = Signal(signed(q.width)), Signal(signed(q.width))
    diff = Signal(signed(max(q.width, v_width) + 3))
    m.d.comb += [out.eq(sub_round_saturate(w, v, s, q)), sat.eq(saturate(diff, q))]
    lo, hi = -(1 << (v_width - 1)), (1 << (v_width - 1)) - 1
    rng = np.random.default_rng(v_width + s)
    mismatches = []

    async def bench(ctx):
        for wv in sorted({q.min, q.min + 1, -1, 0, 1, q.max - 1, q.max}
                         | {int(x) for x in rng.integers(q.min, q.max + 1, 6)}):
            ctx.set(w, wv)
            half = (1 << (s - 1)) if s > 0 else 0
            # Values of v whose rounding crosses a saturation bound or a rounding step.
            edges = [0, lo, hi, half, -half] + [
                ((wv - b) << max(s, 0)) + half for b in (q.max, q.min, q.max + 1, q.min - 1)]
            values = sorted({min(max(e + k, lo), hi) for e in edges for k in range(-3, 4)}
                            | {int(x) for x in rng.integers(lo, hi, 60)})
            for x in values:
                ctx.set(v, x)
                ref = q.saturate(wv - round_shift(x, s))
                if ctx.get(out) != ref:
                    mismatches.append((wv, x, ctx.get(out), ref))
        dlo, dhi = -(1 << (len(diff) - 1)), (1 << (len(diff) - 1)) - 1
        for x in sorted({min(max(e + k, dlo), dhi) for e in (q.min, q.max, dlo, dhi, 0)
                         for k in range(-3, 4)}):
            ctx.set(diff, x)
            if ctx.get(sat) != q.saturate(x):
                mismatches.append(("saturate", x, ctx.get(sat), q.saturate(x)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []

@pytest.mark.parametrize("width, cases, q", [
    # The paper format's update: six kinds of parameters (weights and biases of three layers).
    (36, _update_cases([20, 12, 21, 12, 24, 15], 5.0, Q(16, 12)), Q(16, 12)),
    # A clip beyond the format (saturation), and shifts below 1 (aligned).
    (36, _update_cases([20, 12, 24, 15], 5.0, Q(12, 11)), Q(12, 11)),
    (24, _update_cases([10, 14, 12, 9], 0.02, Q(16, 12)), Q(16, 12)),
    (20, [(0, 3), (7, 1), (100, 0)], Q(8, 3)),
])
@pytest.mark.parametrize("given_operands", [False, True])
def test_clip_narrow_is_saturate_of_round_of_clip(width, cases, q, given_operands):
    """The update's clip and narrowing (one circuit for all its cases) against clip, round and
    saturate one after another, for each case at every boundary (+-3) and at random values;
    with the case's constants chosen inside, or given (``operands``, as the update engine's
    registers under ``fmax_stages`` give them: here signals set to the case's values)."""
    m = Module()
    v = Signal(signed(width))
    sel = Signal(range(len(cases)))
    out = Signal(signed(q.width))
    operands = None
    if given_operands:
        operands = {}
        for key, values in clip_operands(cases).items():
            operands[key] = Signal(signed(max(int(x).bit_length() for x in values) + 1),
                                   name=key)
            m.d.comb += operands[key].eq(Array(Const(x) for x in values)[sel])
    m.d.comb += out.eq(clip_narrow(m, v, sel, cases, q, "t", operands))
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    rng = np.random.default_rng(width + len(cases))
    mismatches = []

    def ref(x, c, s):
        return q.saturate(round_shift(min(max(x, -c), c), s))

    async def bench(ctx):
        for i, (c, s) in enumerate(cases):
            half = (1 << (s - 1)) if s > 0 else 0
            edges = [c, -c, 0, lo, hi, ((q.max + 1) << max(s, 0)) - half,
                     (q.min << max(s, 0)) - half, (1 << max(s, 0)) - half]
            values = sorted({min(max(e + k, lo), hi) for e in edges for k in range(-3, 4)}
                            | {int(x) for x in rng.integers(lo, hi, 200)}
                            | {int(x) for x in rng.integers(-2 * c - 8, 2 * c + 8, 200)})
            ctx.set(sel, i)
            for x in values:
                ctx.set(v, x)
                if ctx.get(out) != ref(x, c, s):
                    mismatches.append((i, x, ctx.get(out), ref(x, c, s)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []
