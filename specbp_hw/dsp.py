"""Registered products: ``p`` loads ``a * b`` at the clock edge (when ``en``).

Every multiplier of the engines is a product of two registers into a register. Yosys maps
such a product on the ECP5 into a MULT18X18D with none of its registers in use (its ECP5
flow packs no flip-flops into the DSP blocks), so the product leaves the block, crosses the
fabric to its register and comes back: two routes and the multiplier in one cycle. On the
85F the 16-MAC core alone ended on such a path (commit e508023: ``op_a`` into the block and
back into ``prod``, 10.89 ns, 6.44 of it routing and 3.93 the multiplier).

On an ECP5 board build (a platform of family ``ecp5`` given to ``elaborate``) the product's
register is therefore the block's own output register: a MULT18X18D instantiated with
``REG_OUTPUT_CLK = CLK0`` and its inputs unregistered, the register's clock enable ``en``
(``CE0``) and no reset (``RST0`` tied low). Elsewhere (the simulators, the Verilog export,
the iCE40, whose flow packs registers into its DSPs by itself) it is the same register in
logic. Both are the same circuit: a register with no reset, loading the product of the
operands, sign-extended to the block's 18 bits, when ``en`` is high, and 0 at power-on (the
block's registers are cleared by the configuration's global reset, ``GSR``). The register
has no reset in either, so a reset of the domain leaves it as it is; every consumer of a
product is gated by a stage's valid bit, which is reset.

A platform whose ``dsp_output_registers`` is False (the build's ``--dsp-registers logic``)
keeps the registers in logic on the ECP5 too. The 16-MAC core meets 100 MHz on the 85F with
the blocks' registers, but with them the 32-MAC ``paper-x2-skip`` (116 blocks) no longer
finishes routing there, and without them it routes and meets 60 MHz (docs/BUILD.md).
"""

from amaranth.hdl import *

__all__ = ["DSP_WIDTH", "registered_product"]

DSP_WIDTH = 18      # a MULT18X18D's operands, signed


def _fits(v):
    """A value fits a block's signed 18-bit operand (an unsigned one needs a sign bit)."""
    return v.shape().width + (not v.shape().signed) <= DSP_WIDTH


def _use_block(platform, a, b):
    return (getattr(platform, "family", None) == "ecp5"
            and getattr(platform, "dsp_output_registers", True) and _fits(a) and _fits(b))


def registered_product(m, name, a, b, *, en=1, platform=None):
    """A register ``name`` that loads ``a * b`` when ``en``; returns it.

    ``a`` and ``b`` are values (signed or unsigned; a constant ``b`` is fine); the register
    is ``a.width + b.width`` bits wide, signed if either operand is (every product of the
    operands' values fits). On an ECP5 platform with both operands fitting the block's
    signed 18 bits the register is a MULT18X18D's output register (the module's docstring),
    unless the platform's ``dsp_output_registers`` is False; otherwise a register in logic.
    Latency 1 cycle.
    """
    a, b = Value.cast(a), Value.cast(b)
    width = a.shape().width + b.shape().width
    signed_ = a.shape().signed or b.shape().signed
    prod = Signal(Shape(width, signed_), name=name, reset_less=True)
    if not _use_block(platform, a, b):
        with m.If(en):
            m.d.sync += prod.eq(a * b)
        return prod
    # Sign- or zero-extend each operand to 18 bits and multiply signed: the 36-bit product
    # is the exact product of the operands' values, of which ``prod`` takes the low bits.
    a18 = Signal(signed(DSP_WIDTH), name=f"{name}_a")
    b18 = Signal(signed(DSP_WIDTH), name=f"{name}_b")
    p36 = Signal(signed(2 * DSP_WIDTH), name=f"{name}_p")
    m.d.comb += [a18.eq(a), b18.eq(b), prod.eq(p36[:width])]
    ports = {f"i_A{i}": a18[i] for i in range(DSP_WIDTH)}
    ports.update({f"i_B{i}": b18[i] for i in range(DSP_WIDTH)})
    ports.update({f"i_C{i}": Const(0) for i in range(DSP_WIDTH)})
    ports.update({f"o_P{i}": p36[i] for i in range(2 * DSP_WIDTH)})
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="NONE", p_REG_INPUTB_CLK="NONE", p_REG_INPUTC_CLK="NONE",
        p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_RESETMODE="SYNC", p_GSR="ENABLED", p_SOURCEB_MODE="B_SHIFT",
        i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
        i_CLK0=ClockSignal("sync"), i_CE0=en, i_RST0=Const(0),
        **ports)
    return prod
