"""CXXRTL simulation against Amaranth's simulator: exact values, cycle for cycle."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from specbp_hw.cxxrtl import CxxrtlError, CxxrtlSim, compiler_available

pytestmark = pytest.mark.skipif(not compiler_available(),
                                reason="no C++ compiler (g++, c++, clang++ or $CXX) for CXXRTL")


# -- designs ---------------------------------------------------------------------------------

class Counter(wiring.Component):
    en: In(1)
    count: Out(16)
    done: Out(1)

    def __init__(self, limit=100):
        self._limit = limit
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        m.d.comb += self.done.eq(self.count == self._limit)
        return m


class Accumulator(wiring.Component):
    """Sums each group of ``group`` input beats into one output beat.

    Input ``ready`` drops one cycle in four and while an output beat waits: internal backpressure.
    """

    def __init__(self, width, group):
        self._width, self._group = width, group
        super().__init__({"i": In(stream.Signature(width)),
                          "o": Out(stream.Signature(width + 8))})

    def elaborate(self, platform):
        m = Module()
        acc = Signal(self._width + 8)
        n = Signal(range(self._group))
        phase = Signal(2)
        m.d.sync += phase.eq(phase + 1)
        m.d.comb += self.i.ready.eq(~self.o.valid & (phase != 3))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(n == self._group - 1):
                m.d.sync += [self.o.payload.eq(acc + self.i.payload), self.o.valid.eq(1),
                             acc.eq(0), n.eq(0)]
            with m.Else():
                m.d.sync += [acc.eq(acc + self.i.payload), n.eq(n + 1)]
        return m


def accumulate(data, width, group):
    return [sum(data[k:k + group]) % (1 << (width + 8))
            for k in range(0, len(data) - group + 1, group)]


class Store(wiring.Component):
    waddr: In(5)
    wdata: In(100)
    we: In(1)
    raddr: In(5)
    rdata: Out(100)

    def __init__(self):
        super().__init__()
        self.mem = memory.Memory(shape=100, depth=32, init=[(1 << 99) | k for k in range(8)])

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = self.mem
        wp = self.mem.write_port()
        # Not transparent: read-before-write, as block RAM does.
        rp = self.mem.read_port()
        last = Signal(5)
        with m.If(self.we):
            m.d.sync += last.eq(self.waddr)
        m.d.comb += [wp.addr.eq(self.waddr), wp.data.eq(self.wdata), wp.en.eq(self.we),
                     rp.addr.eq(self.raddr), self.rdata.eq(rp.data ^ last)]
        return m


class MemTop(wiring.Component):
    waddr: In(5)
    wdata: In(100)
    we: In(1)
    raddr: In(5)
    rdata: Out(100)
    wide: Out(100)

    def __init__(self):
        super().__init__()
        self.store = Store()

    def elaborate(self, platform):
        m = Module()
        m.submodules.store = store = self.store
        wide_reg = Signal(100, init=(0xDEADBEEF << 60) | 0x1234)
        m.d.sync += wide_reg.eq(wide_reg.rotate_left(3) ^ self.wdata)
        m.d.comb += [store.waddr.eq(self.waddr), store.wdata.eq(self.wdata),
                     store.we.eq(self.we), store.raddr.eq(self.raddr),
                     self.rdata.eq(store.rdata), self.wide.eq(wide_reg)]
        return m


def simulate(dut, *benches):
    """Run Amaranth testbenches on ``dut``; return the first testbench's result."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []
    for bench in benches:
        async def wrapper(ctx, bench=bench):
            results.append((bench, await bench(ctx)))
        sim.add_testbench(wrapper)
    sim.run()
    return dict(results)[benches[0]]


# -- fixtures: one build per design, shared --------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cxxrtl-cache")


@pytest.fixture(scope="module")
def counter(cache):
    return CxxrtlSim(Counter(), cache_dir=cache)


@pytest.fixture(scope="module", params=[8, 1024], ids=["8bit", "1024bit"])
def acc(request, cache):
    width = request.param
    return width, CxxrtlSim(Accumulator(width, 3), cache_dir=cache)


@pytest.fixture(scope="module")
def mem(cache):
    return CxxrtlSim(MemTop(), cache_dir=cache)


# -- counter ---------------------------------------------------------------------------------

def test_counter_matches_cycle_for_cycle(counter):
    rng = random.Random(1)
    ens = [rng.random() < 0.7 for _ in range(300)]
    counter.reset()
    got = []
    for en in ens:
        counter["en"] = en
        counter.step()
        got.append((counter["count"], counter["done"]))

    dut = Counter()

    async def bench(ctx):
        out = []
        for en in ens:
            ctx.set(dut.en, en)
            await ctx.tick()
            out.append((ctx.get(dut.count), ctx.get(dut.done)))
        return out

    assert got == simulate(dut, bench)


def test_counter_bulk_step_and_cycle_count(counter):
    counter.reset()
    before = counter.cycles
    counter["en"] = 1
    counter.step(70_000)
    assert counter["count"] == 70_000 % (1 << 16)
    assert counter.cycles == before + 70_000


def test_run_until_matches(counter):
    counter.reset()
    counter["en"] = 1
    counter.step(5)
    cycles = counter.run_until("done", 1, max_cycles=1000)
    assert counter["count"] == 100

    dut = Counter()

    async def bench(ctx):
        ctx.set(dut.en, 1)
        await ctx.tick().repeat(5)
        n = 0
        while True:
            await ctx.tick()
            n += 1
            if ctx.get(dut.done):
                return n

    assert cycles == simulate(dut, bench) == 95


def test_run_until_max_cycles(counter):
    counter.reset()
    counter["en"] = 0
    before = counter.cycles
    with pytest.raises(CxxrtlError, match=r"'done' did not become 1 within max_cycles=50$"):
        counter.run_until("done", max_cycles=50)
    assert counter.cycles == before + 50


def test_reset_pulses_rst(counter):
    counter["en"] = 1
    counter.step(3)
    counter.reset()
    assert counter["count"] == 0


def test_unknown_signal_lists_close_matches(counter):
    with pytest.raises(CxxrtlError) as info:
        counter["cuont"]
    assert "close matches: count" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CxxrtlError, match="cannot be set|combinationally"):
        counter["done"] = 1
    with pytest.raises(CxxrtlError, match="does not fit"):
        counter["en"] = 2


# -- cache and build errors ------------------------------------------------------------------

def test_cache_hit_and_miss(counter, cache):
    again = CxxrtlSim(Counter(), cache_dir=cache)
    assert again.cache_hit and again.library_path == counter.library_path
    assert again.build_seconds < counter.build_seconds / 5
    # Two handles of one library are independent simulations.
    again["en"] = 1
    again.step(7)
    assert again["count"] == 7 and again.cycles == 7

    other = CxxrtlSim(Counter(limit=101), cache_dir=cache)
    assert not other.cache_hit and other.library_path != counter.library_path
    other["en"] = 1
    assert other.run_until("done", max_cycles=1000) == 101


def test_missing_compiler(tmp_path, monkeypatch):
    with pytest.raises(CxxrtlError) as info:
        CxxrtlSim(Counter(), cache_dir=tmp_path, cxx="/nonexistent/g++")
    assert "no C++ compiler found" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    assert not compiler_available()
    with pytest.raises(CxxrtlError,
                       match=r"^no C\+\+ compiler found.*\(set CXX or install g\+\+\)$"):
        CxxrtlSim(Counter(), cache_dir=tmp_path)


def test_failing_compiler_is_summarised(tmp_path):
    with pytest.raises(CxxrtlError, match="C\\+\\+ compilation failed") as info:
        CxxrtlSim(Counter(limit=7), cache_dir=tmp_path, cxx="false")
    assert "\n" not in str(info.value)
    assert list(tmp_path.glob("failed-*.log"))


# -- streams ---------------------------------------------------------------------------------

def amaranth_stream(width, data, beats):
    """Idiomatic producer/consumer testbenches; returns (payloads, cycle of the last beat)."""
    dut = Accumulator(width, 3)

    async def consumer(ctx):
        out, cycles = [], 0
        ctx.set(dut.o.ready, 1)
        while len(out) < beats:
            _, _, payload, valid = await ctx.tick().sample(dut.o.payload, dut.o.valid)
            cycles += 1
            if valid:
                out.append(payload)
        ctx.set(dut.o.ready, 0)
        return out, cycles

    async def producer(ctx):
        for value in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, value)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    return simulate(dut, consumer, producer)


def test_stream_run_matches(acc):
    width, sim = acc
    rng = random.Random(width)
    data = [rng.getrandbits(width) for _ in range(60)]
    expected = accumulate(data, width, 3)
    sim.reset()
    payloads, cycles = sim.stream_run(source=("i", data), sink=("o", len(expected)),
                                      max_cycles=10_000)
    ref, ref_cycles = amaranth_stream(width, data, len(expected))
    assert [int(p) for p in payloads] == ref == expected
    assert cycles == ref_cycles
    if width > 64:
        assert payloads.dtype == object
    else:
        assert (payloads == np.array(expected, np.uint64)).all()


def test_stream_run_until_and_names(acc):
    width, sim = acc
    data = [(1 << width) - 1 - k for k in range(6)]
    sim.reset()
    _, cycles = sim.stream_run(
        source=("i__valid", "i__ready", "i__payload", data), until=("o__valid", 1),
        max_cycles=100)
    assert sim["o__payload"] == accumulate(data, width, 3)[0]
    dut = Accumulator(width, 3)

    async def bench(ctx):
        n = sent = 0
        while True:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, data[sent])
            fire = ctx.get(dut.i.ready)
            await ctx.tick()
            n, sent = n + 1, sent + fire
            if ctx.get(dut.o.valid):
                return n

    assert cycles == simulate(dut, bench)
    # The pending beat and the rest drain through a sink-only run.
    rest, _ = sim.stream_run(sink=("o", 1), max_cycles=100)
    assert [int(p) for p in rest] == accumulate(data, width, 3)[:1]


def test_stream_run_max_cycles(acc):
    width, sim = acc
    sim.reset()
    with pytest.raises(CxxrtlError, match=r"exceeded max_cycles=10 \(sent \d+/90 beats, "
                                          r"received \d+/30\)$"):
        sim.stream_run(source=("i", [1] * 90), sink=("o", 30), max_cycles=10)


# -- memory and wide signals -----------------------------------------------------------------

def test_memory_design_matches(mem, cache):
    rng = random.Random(7)
    steps = [dict(we=rng.random() < 0.5, waddr=rng.randrange(32), wdata=rng.getrandbits(100),
                  raddr=rng.randrange(32)) for _ in range(200)]
    sim = CxxrtlSim(MemTop(), cache_dir=cache)  # fresh state (memory init), from the cache
    assert sim.cache_hit
    got = []
    for s in steps:
        for name, value in s.items():
            sim[name] = value
        sim.step()
        got.append((sim["rdata"], sim["wide"], sim["store.last"]))
    contents = [int(v) for v in sim.read_memory("store.mem")]

    dut = MemTop()

    async def bench(ctx):
        out = []
        for s in steps:
            for name, value in s.items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            out.append((ctx.get(dut.rdata), ctx.get(dut.wide), None))
        return out, [ctx.get(dut.store.mem.data[k]) for k in range(32)]

    ref, ref_contents = simulate(dut, bench)
    assert [g[:2] for g in got] == [r[:2] for r in ref]
    assert max(g[1] for g in got) >= 1 << 64  # the 100-bit values really are wide
    assert contents == ref_contents
    assert got[-1][2] == [s["waddr"] for s in steps if s["we"]][-1]


def test_write_memory_reads_back_through_port(mem):
    rng = random.Random(3)
    values = [rng.getrandbits(100) for _ in range(32)]
    mem["we"] = 0
    mem.write_memory("store.mem", values)
    assert [int(v) for v in mem.read_memory("store.mem")] == values
    last = mem["store.last"]
    for addr in range(32):
        mem["raddr"] = addr
        mem.step()
        assert mem["rdata"] == values[addr] ^ last
    mem.write_memory("store mem", [5, 6], start=30)  # CXXRTL's own spelling works too
    assert [int(v) for v in mem.read_memory("store.mem")[30:]] == [5, 6]
    with pytest.raises(CxxrtlError, match="outside memory"):
        mem.write_memory("store.mem", [1, 2], start=31)


def test_wide_values_and_visible_names(mem):
    mem["wdata"] = (1 << 99) | 3
    assert mem["wdata"] == (1 << 99) | 3
    mem["wdata"] = -1
    assert mem["wdata"] == (1 << 100) - 1 and mem.get("wdata", signed=True) == -1
    with pytest.raises(CxxrtlError, match="does not fit"):
        mem["wdata"] = 1 << 100
    names = mem.names()
    for name in ["clk", "rst", "wdata", "rdata", "wide", "wide_reg", "store.mem", "store.last"]:
        assert name in names
    # A submodule port that is only a combinational connection is optimised away (no outlines).
    assert "store.rdata" not in names
    with pytest.raises(CxxrtlError, match="is a memory"):
        mem["store.mem"]
