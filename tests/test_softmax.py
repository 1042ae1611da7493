# amaranth: UnusedElaboratable=no
"""The softmax engine against the bit-exact model :func:`golden.fixed_model.softmax`.

The validation tests build components that are never elaborated, hence the linter option on
the first line. Set ``GENERATE_VCDS=1`` to write waveforms of the streaming simulations to the
working directory.
"""

import os
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.fixed import Q, FixedFormat, exp2_table
from golden.fixed_model import softmax
from specbp_hw.softmax import Softmax, softmax_latency
from specbp_hw.testing import stream_get, stream_put

FORMATS = {
    "default": FixedFormat(),
    "small": FixedFormat(act=Q(12, 5), exp_index_bits=6, exp_frac=12, recip_frac=14,
                         prob_frac=12),
    "wide": FixedFormat(act=Q(18, 10)),
}
# exp_frac + recip_frac < prob_frac: the final rounding becomes a left shift.
LEFT_SHIFT = FixedFormat(exp_index_bits=4, exp_frac=8, recip_frac=8, prob_frac=18)


def _run(dut, testbenches, name):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    if os.environ.get("GENERATE_VCDS"):
        with sim.write_vcd(f"{name}.vcd"):
            sim.run()
    else:
        sim.run()


def rtl_softmax(fmt, z, *, ways=1, div_bits=1, seed=None, table_stage=False):
    """``(y, prediction)`` of the gateware for the logit rows ``z``; random gaps with ``seed``."""
    dut = Softmax(fmt, z.shape[1], ways=ways, div_bits=div_bits, table_stage=table_stage)
    gaps_in = gaps_out = None
    if seed is not None:
        gaps_in, gaps_out = random.Random(seed), random.Random(seed + 1)
    ys, preds = [], []

    async def producer(ctx):
        for row in z:
            await stream_put(ctx, dut.i, [int(v) for v in row], gaps=gaps_in)

    async def consumer(ctx):
        for _ in range(len(z)):
            out = await stream_get(ctx, dut.o, gaps=gaps_out)
            ys.append([out.y[k] for k in range(z.shape[1])])
            preds.append(out.prediction)

    _run(dut, [producer, consumer], f"softmax_{z.shape[1]}")
    return np.array(ys, np.int64), np.array(preds, np.int64)


def logit_cases(fmt, classes, rng):
    """Random and corner-case logit rows (int64, the act format)."""
    lo, hi = fmt.act.min, fmt.act.max
    rows = [
        rng.integers(lo, hi + 1, (32, classes)),                     # anywhere in the range
        rng.integers(-(4 << fmt.act.frac), 4 << fmt.act.frac, (64, classes)),  # typical logits
        rng.integers(-3, 4, (16, classes)) + rng.integers(lo + 3, hi - 3, (16, 1)),  # LSBs apart
        rng.choice([lo, hi], (8, classes)),                          # extremes, with ties
        rng.choice([lo, lo + 1, hi - 1, hi], (8, classes)),
        rng.integers(-2, 3, (8, classes)),                           # many ties near zero
        np.full((1, classes), lo), np.full((1, classes), hi),        # all equal
        np.full((1, classes), 0),
    ]
    dominant = rng.integers(-(1 << fmt.act.frac), 1 << fmt.act.frac, (3, classes))
    dominant[np.arange(3), rng.integers(0, classes, 3)] = hi         # one dominant class
    rows.append(dominant)
    lsb = np.full((2, classes), 7)
    lsb[0, -1] = 8                                                   # the last one, by 1 LSB
    lsb[1, 0] = 6                                                    # all but the first, tied
    rows.append(lsb)
    return np.concatenate(rows).astype(np.int64)


def _check(fmt, z, y, pred):
    assert (y == softmax(fmt, z)).all()
    assert (pred == z.argmax(axis=1)).all()


@pytest.mark.parametrize("classes", [2, 10, 16])
@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_bit_exact(fmt_name, classes):
    fmt = FORMATS[fmt_name]
    z = logit_cases(fmt, classes, np.random.default_rng(classes))
    _check(fmt, z, *rtl_softmax(fmt, z))


@pytest.mark.parametrize("classes", [2, 10, 16])
@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_backpressure(fmt_name, classes):
    fmt = FORMATS[fmt_name]
    rng = np.random.default_rng(100 + classes)
    z = logit_cases(fmt, classes, rng)
    z = z[rng.permutation(len(z))[:40]]
    _check(fmt, z, *rtl_softmax(fmt, z, seed=classes))


# (ways, div_bits) other than the default, every format with each: "all" is ways == classes,
# the fully parallel datapath; 3 leaves a partial last group for 10 and 16 classes.
PARALLEL = [(ways, div_bits) for ways in ("1", "3", "all") for div_bits in (1, 2, 4)
            if (ways, div_bits) != ("1", 1)]


def _ways(ways, classes):
    return classes if ways == "all" else int(ways)


@pytest.mark.parametrize("ways,div_bits", PARALLEL)
@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_bit_exact_parallel(fmt_name, ways, div_bits):
    fmt = FORMATS[fmt_name]
    classes = (10, 16)[(list(FORMATS).index(fmt_name) + div_bits) % 2]
    z = logit_cases(fmt, classes, np.random.default_rng(classes))
    _check(fmt, z, *rtl_softmax(fmt, z, ways=_ways(ways, classes), div_bits=div_bits))


@pytest.mark.parametrize("fmt_name,classes,ways,div_bits", [
    ("default", 2, 2, 4), ("small", 2, 1, 2), ("wide", 3, 2, 3), ("default", 3, 3, 1),
    ("small", 10, 4, 3), ("wide", 16, 5, 2),
])
def test_bit_exact_shapes(fmt_name, classes, ways, div_bits):
    # Few classes, div_bits = 3, and further partial last groups (10 = 4 + 4 + 2, 16 = 3 * 5 + 1).
    fmt = FORMATS[fmt_name]
    z = logit_cases(fmt, classes, np.random.default_rng(classes + 1))
    _check(fmt, z, *rtl_softmax(fmt, z, ways=ways, div_bits=div_bits))


@pytest.mark.parametrize("fmt_name,classes,ways,div_bits", [
    ("default", 10, 10, 2), ("small", 16, 16, 4), ("wide", 10, 3, 1), ("default", 16, 3, 4),
    ("small", 10, 1, 2), ("wide", 2, 2, 1),
])
def test_backpressure_parallel(fmt_name, classes, ways, div_bits):
    fmt = FORMATS[fmt_name]
    rng = np.random.default_rng(200 + classes)
    z = logit_cases(fmt, classes, rng)
    z = z[rng.permutation(len(z))[:40]]
    _check(fmt, z, *rtl_softmax(fmt, z, ways=ways, div_bits=div_bits, seed=classes + ways))


def test_most_classes():
    fmt = FORMATS["default"]
    z = logit_cases(fmt, 64, np.random.default_rng(64))[::4]
    _check(fmt, z, *rtl_softmax(fmt, z))


@pytest.mark.parametrize("ways,div_bits", [(64, 2), (7, 3)])
def test_most_classes_parallel(ways, div_bits):
    # 64 lanes make a large simulation: fewer rows.
    fmt = FORMATS["default"]
    z = logit_cases(fmt, 64, np.random.default_rng(64))[1::8]
    _check(fmt, z, *rtl_softmax(fmt, z, ways=ways, div_bits=div_bits))


@pytest.mark.parametrize("ways,div_bits", [(1, 1), (10, 4), (3, 2)])
def test_left_shift_rounding(ways, div_bits):
    z = logit_cases(LEFT_SHIFT, 10, np.random.default_rng(7))
    _check(LEFT_SHIFT, z, *rtl_softmax(LEFT_SHIFT, z, ways=ways, div_bits=div_bits))


@pytest.mark.parametrize("fmt", [*FORMATS.values(), LEFT_SHIFT])
def test_shift_clamp(fmt):
    # The gateware clamps the shift to exp_frac + 1, the model to 62: the same zeros.
    table = exp2_table(fmt.exp_index_bits, fmt.exp_frac)
    assert table.max() == 1 << fmt.exp_frac
    for n in range(fmt.exp_frac + 1, 63):
        assert (table >> n == 0).all()


def _measure(fmt, classes, ways=1, div_bits=1, table_stage=False):
    """Check the handshake and return the cycles from the input transfer to ``o.valid``."""
    dut = Softmax(fmt, classes, ways=ways, div_bits=div_bits, table_stage=table_stage)
    z = np.random.default_rng(1).integers(fmt.act.min, fmt.act.max + 1, (2, classes))
    measured = []

    async def testbench(ctx):
        await stream_put(ctx, dut.i, [int(v) for v in z[0]])
        cycles = 0
        while not ctx.get(dut.o.valid):
            assert not ctx.get(dut.i.ready)          # busy: no new input
            await ctx.tick()
            cycles += 1
        measured.append(cycles)
        # Valid and payload hold while the consumer stalls; no input is taken meanwhile.
        ctx.set(dut.i.payload, [int(v) for v in z[1]])
        ctx.set(dut.i.valid, 1)
        held = ctx.get(dut.o.payload)
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
            assert ctx.get(dut.o.payload) == held
        ctx.set(dut.i.valid, 0)
        out = await stream_get(ctx, dut.o)
        assert out == held
        assert [out.y[k] for k in range(classes)] == list(softmax(fmt, z[:1])[0])
        assert not ctx.get(dut.o.valid)

    _run(dut, [testbench], "softmax_latency")
    assert len(measured) == 1
    return measured[0]


@pytest.mark.parametrize("ways", [1, 3, 4, 10])
def test_groups_as_produced_and_output_held_in_place(ways):
    """``y_new`` gives every group once, in order, the last in the cycle before ``o.valid``
    rises, padding lanes 0; after the transfer the payload stays until the next input (``y``
    until that input's first group enters it, at the edge that ends its ``y_new_valid``), so a
    consumer may read it in place."""
    fmt, classes = FORMATS["default"], 10
    dut = Softmax(fmt, classes, ways=ways)
    z = np.random.default_rng(ways).integers(-(4 << fmt.act.frac), 4 << fmt.act.frac,
                                             (2, classes))
    groups = -(-classes // ways)

    async def testbench(ctx):
        for row in range(2):
            await stream_put(ctx, dut.i, [int(v) for v in z[row]])
            seen = []
            while True:
                if ctx.get(dut.y_new_valid):
                    seen.append((ctx.get(dut.y_new_group),
                                 [ctx.get(dut.y_new[j]) for j in range(ways)]))
                    assert not ctx.get(dut.o.valid)
                    if row == 1 and len(seen) == 1:  # the first output, still in place
                        assert [ctx.get(dut.o.payload.y[k]) for k in range(classes)] == held_y
                    if len(seen) == groups:
                        break
                elif row == 1 and not seen:          # the first output, still in place
                    assert [ctx.get(dut.o.payload.y[k]) for k in range(classes)] == held_y
                await ctx.tick()
            await ctx.tick()
            assert ctx.get(dut.o.valid)              # the cycle after the last group
            want = list(softmax(fmt, z[row:row + 1])[0]) + [0] * (groups * ways - classes)
            assert seen == [(g, want[g * ways:(g + 1) * ways]) for g in range(groups)]
            held = ctx.get(dut.o.payload)
            held_y = [held.y[k] for k in range(classes)]
            await stream_get(ctx, dut.o)
            for _ in range(7):                       # idle after the transfer
                assert ctx.get(dut.o.payload) == held
                await ctx.tick()

    _run(dut, [testbench], "softmax_groups")


@pytest.mark.parametrize("classes", [2, 10, 16])
@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_latency_and_handshake(fmt_name, classes):
    fmt = FORMATS[fmt_name]
    dut = Softmax(fmt, classes)
    assert dut.latency == 3 * classes + fmt.recip_frac + 5
    assert _measure(fmt, classes) == dut.latency


@pytest.mark.parametrize("fmt_name,classes,ways,div_bits", [
    ("default", 10, 10, 2), ("default", 10, 10, 1), ("default", 10, 3, 4), ("small", 10, 2, 3),
    ("wide", 16, 16, 4), ("default", 16, 5, 2), ("small", 2, 2, 1), ("wide", 3, 1, 4),
    ("default", 64, 64, 2), ("default", 64, 9, 3), ("small", 17, 4, 2),
])
def test_latency_parallel(fmt_name, classes, ways, div_bits):
    fmt = FORMATS[fmt_name]
    dut = Softmax(fmt, classes, ways=ways, div_bits=div_bits)
    assert dut.latency == softmax_latency(fmt, classes, ways=ways, div_bits=div_bits)
    assert _measure(fmt, classes, ways, div_bits) == dut.latency


@pytest.mark.parametrize("classes,ways,div_bits", [(10, 1, 1), (10, 10, 2), (16, 3, 4)])
def test_table_stage(classes, ways, div_bits):
    # The table's register: the same bits, one cycle more, with stream gaps.
    fmt = FORMATS["default"]
    z = logit_cases(fmt, classes, np.random.default_rng(7 + classes))
    _check(fmt, z, *rtl_softmax(fmt, z, ways=ways, div_bits=div_bits, seed=ways,
                                table_stage=True))
    dut = Softmax(fmt, classes, ways=ways, div_bits=div_bits, table_stage=True)
    assert dut.latency == softmax_latency(fmt, classes, ways=ways, div_bits=div_bits) + 1
    assert _measure(fmt, classes, ways, div_bits, table_stage=True) == dut.latency


def test_latency_target():
    fmt = FixedFormat()
    assert softmax_latency(fmt, 10) == 52
    assert softmax_latency(fmt, 10, ways=10, div_bits=2) == 20    # the target is <= 22
    # The fully parallel datapath: max tree, pipeline, adder tree, multiples, divider, scaling.
    assert softmax_latency(fmt, 10, ways=10, div_bits=2) == 2 + 1 + 3 + 2 + 1 + 9 + 1 + 1


def test_parameters():
    fmt = FixedFormat()
    dut = Softmax(fmt, 10)
    assert dut.fmt is fmt and dut.classes == 10
    with pytest.raises(AttributeError):
        dut.classes = 3
    with pytest.raises(TypeError, match=r"Format must be a FixedFormat, not 'x'"):
        Softmax("x", 10)
    with pytest.raises(TypeError, match=r"Number of classes must be an integer, not 10.0"):
        Softmax(fmt, 10.0)
    with pytest.raises(TypeError, match=r"Number of classes must be an integer, not True"):
        Softmax(fmt, True)
    for bad in (1, 0, 65):
        with pytest.raises(ValueError, match=rf"from 2 to 64, not {bad}$"):
            Softmax(fmt, bad)
    assert len(Softmax(fmt, 64).o.payload.prediction) == 6
    assert len(Softmax(fmt, 2).o.payload.prediction) == 1


def test_parallel_parameters():
    fmt = FixedFormat()
    dut = Softmax(fmt, 10, ways=10, div_bits=2)
    assert dut.ways == 10 and dut.div_bits == 2
    assert Softmax(fmt, 10).ways == 1 and Softmax(fmt, 10).div_bits == 1
    with pytest.raises(AttributeError):
        dut.ways = 3
    with pytest.raises(TypeError):
        Softmax(fmt, 10, 2)                                 # keyword-only
    for check in (lambda **kw: Softmax(fmt, 10, **kw),
                  lambda **kw: softmax_latency(fmt, 10, **kw)):
        with pytest.raises(TypeError, match=r"^Ways must be an integer, not 2.0$"):
            check(ways=2.0)
        with pytest.raises(TypeError, match=r"^Ways must be an integer, not True$"):
            check(ways=True)
        for bad in (0, -1, 11):
            with pytest.raises(ValueError, match=rf"^Ways must be an integer from 1 to the "
                                                 rf"number of classes \(10\), not {bad}$"):
                check(ways=bad)
        with pytest.raises(TypeError, match=r"^Divider bits per cycle must be an integer, "
                                            r"not '2'$"):
            check(div_bits="2")
        with pytest.raises(TypeError, match=r"^Divider bits per cycle must be an integer, "
                                            r"not False$"):
            check(div_bits=False)
        for bad in (0, 5):
            with pytest.raises(ValueError, match=rf"^Divider bits per cycle must be an integer "
                                                 rf"from 1 to 4, not {bad}$"):
                check(div_bits=bad)
    with pytest.raises(TypeError, match=r"Format must be a FixedFormat, not None"):
        softmax_latency(None, 10)
    with pytest.raises(ValueError, match=r"from 2 to 64, not 1$"):
        softmax_latency(fmt, 1)
