"""Registered products (specbp_hw.dsp): the register in logic, simulated, and on an ECP5 the
DSP block's output register, checked in Yosys' netlist."""

import json
import random
import subprocess
import types

import pytest
from amaranth.back import rtlil
from amaranth.hdl import *
from amaranth.sim import Simulator

from specbp_hw.dsp import registered_product
from specbp_hw.toolchain import yowasp_command

ECP5 = types.SimpleNamespace(family="ecp5")     # what registered_product reads of a platform


class _Product(Elaboratable):
    def __init__(self, a_shape, b, *, platform=None):
        self.a = Signal(a_shape, name="a")
        self.b = Signal(b, name="b") if not isinstance(b, int) else b
        self.en = Signal()
        sa, sb = Shape.cast(a_shape), Value.cast(self.b).shape()
        self.p = Signal(Shape(sa.width + sb.width, sa.signed or sb.signed))
        self._platform = platform

    def elaborate(self, platform):
        m = Module()
        p = registered_product(m, "prod", self.a, self.b, en=self.en, platform=self._platform)
        assert p.shape() == self.p.shape()
        m.d.comb += self.p.eq(p)
        return m


def _limits(shape):
    return (-(1 << shape.width - 1), (1 << shape.width - 1) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)


@pytest.mark.parametrize("a_shape, b", [
    (signed(16), signed(16)),       # the engines' operands
    (signed(16), 655),              # the update's learning rate, a constant
    (unsigned(17), signed(18)),
    (signed(18), unsigned(5)),
])
def test_product_in_logic_loads_the_product_when_enabled(a_shape, b):
    dut = _Product(a_shape, b)
    rng = random.Random(1)
    a_lo, a_hi = _limits(Shape.cast(a_shape))
    b_lo, b_hi = (b, b) if isinstance(b, int) else _limits(Shape.cast(b))
    cases = [(a_lo, b_lo), (a_lo, b_hi), (a_hi, b_lo), (a_hi, b_hi), (0, b_hi)]
    cases += [(rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)) for _ in range(40)]

    async def bench(ctx):
        held = 0
        for i, (x, y) in enumerate(cases):
            en = i % 3 != 2
            ctx.set(dut.a, x)
            if not isinstance(b, int):
                ctx.set(dut.b, y)
            ctx.set(dut.en, en)
            await ctx.tick()
            if en:
                held = x * y
            assert ctx.get(dut.p) == held, (x, y, en)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _synthesize(tmp_path, dut, tag):
    ports = [dut.a, dut.en] + ([] if isinstance(dut.b, int) else [dut.b])
    text = rtlil.convert(dut, name="top", ports=ports + [dut.p])
    (tmp_path / f"{tag}.il").write_text(text)
    (tmp_path / f"{tag}.ys").write_text(f"read_rtlil {tag}.il\nsynth_ecp5 -top top\n"
                                        f"write_json {tag}.json\n")
    subprocess.run([yowasp_command("yosys"), "-q", "-l", f"{tag}.rpt", f"{tag}.ys"],
                   cwd=tmp_path, check=True, capture_output=True)
    return json.loads((tmp_path / f"{tag}.json").read_text())["modules"]["top"]


def test_ecp5_product_is_the_dsp_blocks_output_register(tmp_path):
    # In logic, Yosys maps the product into a combinational MULT18X18D and 32 flip-flops;
    # on an ECP5 the flip-flops are the block's output register: no flip-flop is left.
    kinds = {}
    for tag, platform in (("logic", None), ("block", ECP5)):
        top = _synthesize(tmp_path, _Product(signed(16), signed(16), platform=platform), tag)
        kinds[tag] = top
        types_ = [c["type"] for c in top["cells"].values()]
        assert types_.count("MULT18X18D") == 1
    logic_types = [c["type"] for c in kinds["logic"]["cells"].values()]
    assert logic_types.count("TRELLIS_FF") == 32
    top = kinds["block"]
    assert [c["type"] for c in top["cells"].values()] == ["MULT18X18D"]
    (dsp,) = top["cells"].values()
    prm, con = dsp["parameters"], dsp["connections"]
    assert prm["REG_OUTPUT_CLK"] == "CLK0" and prm["REG_OUTPUT_CE"] == "CE0"
    assert all(prm[f"REG_{r}_CLK"] == "NONE" for r in ("INPUTA", "INPUTB", "PIPELINE"))
    port = {name: v["bits"] for name, v in top["netnames"].items()}
    # Operands sign-extended to 18 bits, multiplied signed; the product's 32 bits are P's low
    # bits; the register's clock enable is ``en``, its reset tied low.
    a = port["a"]
    assert [con[f"A{i}"][0] for i in range(18)] == a + [a[15]] * 2
    b = port["b"]
    assert [con[f"B{i}"][0] for i in range(18)] == b + [b[15]] * 2
    assert [con[f"P{i}"][0] for i in range(32)] == port["p"]
    assert con["SIGNEDA"] == ["1"] and con["SIGNEDB"] == ["1"]
    assert con["CE0"] == port["en"] and con["RST0"] == ["0"]
    assert con["CLK0"] == port["clk"]


def test_ecp5_product_without_the_blocks_registers_stays_in_logic(tmp_path):
    # A platform that asks for no DSP output registers (--dsp-registers logic) gets the same
    # netlist as no platform: a combinational MULT18X18D and 32 flip-flops.
    no_regs = types.SimpleNamespace(family="ecp5", dsp_output_registers=False)
    top = _synthesize(tmp_path, _Product(signed(16), signed(16), platform=no_regs), "noregs")
    types_ = [c["type"] for c in top["cells"].values()]
    assert types_.count("MULT18X18D") == 1 and types_.count("TRELLIS_FF") == 32
    (dsp,) = [c for c in top["cells"].values() if c["type"] == "MULT18X18D"]
    assert dsp["parameters"].get("REG_OUTPUT_CLK", "NONE") == "NONE"


def test_ecp5_product_too_wide_for_a_block_stays_in_logic(tmp_path):
    # An unsigned 18-bit operand needs a 19th (sign) bit: Yosys' own mapping, flip-flops in
    # logic.
    top = _synthesize(tmp_path, _Product(unsigned(18), signed(16), platform=ECP5), "wide")
    types_ = [c["type"] for c in top["cells"].values()]
    assert "TRELLIS_FF" in types_
