# amaranth: UnusedElaboratable=no
"""The counter bank against a cycle-by-cycle model: exact counts, clears, reads."""

import random

import pytest
from amaranth.sim import Simulator

from specbp_hw.counter_bank import CounterBank


@pytest.mark.parametrize("inc_widths, width", [
    ((1,) * 7 + (24,), 48),      # the host link's counters
    ((1, 3), 6),                 # two counters, wrapping within the run
    ((2, 1, 5), 12),
])
def test_reads_are_exact_counts(inc_widths, width):
    """Random increments every cycle, random clears and reads: each read gives its counter's
    count (modulo ``2**width``) of the increments since the last clear, up to the cycle three
    before the read's ``rd_valid`` pulse (a clear two cycles before it counts: 0)."""
    dut = CounterBank(inc_widths, width)
    n = len(inc_widths)
    rng = random.Random(sum(inc_widths) + width)
    checked = []

    async def testbench(ctx):
        history = []        # per cycle: the increments counted (None: a clear)
        req, index, waited = False, 0, 0
        for cycle in range(3000):
            clear = rng.random() < 0.004
            incs = [rng.getrandbits(w) if rng.random() < 0.7 else 0 for w in inc_widths]
            ctx.set(dut.clear, clear)
            for i, v in enumerate(incs):
                ctx.set(getattr(dut, f"inc{i}"), v)
            if not req and rng.random() < 0.2:
                req, index, waited = True, rng.randrange(n), 0
            ctx.set(dut.rd_req, req)
            ctx.set(dut.rd_index, index)
            if ctx.get(dut.rd_valid):
                assert req
                # The count through cycle - 3 (a clear in cycle - 2 included: 0).
                total = 0
                for entry in history[:-2]:
                    total = 0 if entry is None else total + entry[index]
                if history[-2] is None:
                    total = 0
                assert ctx.get(dut.rd_value) == total % (1 << width), (cycle, index)
                checked.append(waited)
                req = False
                ctx.set(dut.rd_req, 0)
            elif req:
                waited += 1
            history.append(None if clear else incs)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert len(checked) > 100
    assert max(checked) <= n + 1       # a read waits at most n + 1 cycles for its pulse


@pytest.mark.parametrize("inc_widths, width, match", [
    ((1,), 8, "at least two"),
    ((1, 0), 8, "at least two positive"),
    ((1, 9), 8, "at least the widest"),
])
def test_bad_parameters(inc_widths, width, match):
    with pytest.raises(ValueError, match=match):
        CounterBank(inc_widths, width)
