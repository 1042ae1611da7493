"""Measurement wrapper and PLL clocking: the training core on a board, nothing removed.

The bitstreams of ``python -m specbp_hw.build`` hold the core behind the UART host link
(:class:`specbp_hw.board_top.PlatformTop`) where the board has a UART. This wrapper is the other
top (``--top core``, and the default on boards without a UART): the core alone, measured as it
is. Every input port of :class:`~specbp_hw.core.TrainingCore` is driven by a free-running 32-bit
LFSR (so no input is a constant that synthesis could propagate), and every output bit is
registered and folded into one XOR (two registered levels) that drives an LED (so no output is
unused and optimised away). The training core itself is built unchanged. It cannot train:
nothing meaningful reaches its inputs.

Clocking (both tops, :func:`add_pll_clock`). The board oscillator feeds the part's PLL, which
makes the ``sync`` clock at the target frequency (ECP5: ``EHXPLLL``; iCE40: ``SB_PLL40_PAD``).
nextpnr derives the PLL output's constraint from the oscillator's, so the timing report is
against the target clock. ``sync`` is held in reset until the PLL locks and a power-on counter
expires (iCE40 block RAMs read zero for about 3 us after configuration).

References: Lattice FPGA-TN-02200 (ECP5 sysCLOCK PLL), Lattice FPGA-TN-02052 (iCE40 sysCLOCK
PLL).
"""

from amaranth.hdl import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .core import TrainingCore

__all__ = ["SynthWrapper", "add_core", "add_pll_clock", "ecp5_pll", "ice40_pll", "pll_config"]


def ecp5_pll(f_in, f_out):
    """Dividers of an ECP5 ``EHXPLLL`` for ``f_out`` from ``f_in`` (both in Hz).

    Feedback from CLKOP: ``f_out = f_in / CLKI_DIV * CLKFB_DIV``, ``VCO = f_out * CLKOP_DIV``.
    Limits (TN-02200): PFD 3.125-400 MHz, VCO 400-800 MHz, output 3.125-400 MHz.

    Returns
    -------
    dict
        ``clki_div``, ``clkfb_div``, ``clkop_div`` and the achieved ``f_out`` (Hz), the closest
        to the request.

    Raises
    ------
    ValueError
        If no divider setting comes within 1% of ``f_out``.
    """
    best = None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if pfd < 3.125e6:
            break
        if pfd > 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not 3.125e6 <= out <= 400e6:
                continue
            clkop_div = max(1, round(600e6 / out))        # aim for the middle of the VCO range
            while clkop_div > 1 and out * clkop_div > 800e6:
                clkop_div -= 1
            while out * clkop_div < 400e6:
                clkop_div += 1
            if clkop_div > 128 or out * clkop_div > 800e6:
                continue
            err = abs(out - f_out)
            if best is None or err < best[0]:
                best = (err, dict(clki_div=clki_div, clkfb_div=clkfb_div,
                                  clkop_div=clkop_div, f_out=out))
    if best is None or best[0] > 0.01 * f_out:
        raise ValueError(f"An ECP5 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz (3.125-400 MHz)")
    return best[1]


def ice40_pll(f_in, f_out):
    """Dividers of an iCE40 ``SB_PLL40_PAD`` (simple feedback) for ``f_out`` from ``f_in``.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``. Limits (TN-02052): PFD 10-133 MHz,
    VCO 533-1066 MHz, output 16-275 MHz.

    Returns
    -------
    dict
        ``divr``, ``divf``, ``divq``, ``filter_range`` and the achieved ``f_out`` (Hz).

    Raises
    ------
    ValueError
        If no divider setting comes within 1% of ``f_out``.
    """
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if not 16e6 <= out <= 275e6:
                    continue
                err = abs(out - f_out)
                if best is None or err < best[0]:
                    best = (err, dict(divr=divr, divf=divf, divq=divq, f_out=out,
                                      filter_range=_ice40_filter_range(pfd)))
    if best is None or best[0] > 0.01 * f_out:
        raise ValueError(f"An iCE40 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz (16-275 MHz)")
    return best[1]


def _ice40_filter_range(pfd):
    # The loop filter setting by PFD frequency, as the icepll tool chooses it.
    for limit, value in ((17e6, 1), (26e6, 2), (44e6, 3), (66e6, 4), (101e6, 5)):
        if pfd < limit:
            return value
    return 6


def pll_config(family, f_in, f_out):
    """The PLL dividers that make ``f_out`` from the oscillator's ``f_in`` (Hz) on ``family``
    (``"ecp5"`` or ``"ice40"``): :func:`ecp5_pll` or :func:`ice40_pll`, with ``family`` added.

    Raises
    ------
    ValueError
        If the family has no PLL here or the PLL cannot make ``f_out``.
    """
    if family == "ecp5":
        cfg = ecp5_pll(f_in, f_out)
    elif family == "ice40":
        cfg = ice40_pll(f_in, f_out)
    else:
        raise ValueError(f"No PLL for the {family!r} family")
    return {"family": family, **cfg}


def add_pll_clock(m, platform, cfg):
    """Make the ``sync`` domain in ``m`` from the platform's oscillator through the PLL of
    ``cfg`` (from :func:`pll_config`), held in reset until the PLL locks and 1024 cycles more.
    """
    clk = platform.request(platform.default_clk, dir="-")
    locked = Signal()
    m.domains.sync = ClockDomain("sync")
    if cfg["family"] == "ecp5":
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk)
        clkop = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=cfg["clki_div"], p_CLKFB_DIV=cfg["clkfb_div"],
            p_CLKOP_DIV=cfg["clkop_div"], p_CLKOP_CPHASE=(cfg["clkop_div"] - 1) // 2,
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_buf.i, i_CLKFB=clkop, o_CLKOP=clkop, o_LOCK=locked,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
            i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0)
        m.d.comb += ClockSignal("sync").eq(clkop)
    else:
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=cfg["divr"], p_DIVF=cfg["divf"],
            p_DIVQ=cfg["divq"], p_FILTER_RANGE=cfg["filter_range"],
            i_PACKAGEPIN=clk.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=ClockSignal("sync"), o_LOCK=locked)
    # Reset until the PLL locks, then a power-on delay of 1024 cycles (>5 us at the clocks
    # used here: iCE40 block RAMs read zero for about 3 us after configuration).
    por = Signal(11, reset_less=True)    # not reset by the reset it makes
    with m.If(~locked):
        m.d.sync += por.eq(0)
    with m.Elif(~por[-1]):
        m.d.sync += por.eq(por + 1)
    m.submodules.rst_sync = ResetSynchronizer(~por[-1], domain="sync")


def add_core(m, platform, core, reset=None):
    """Add ``core`` to ``m`` as its submodule ``core``, on the ``sync`` clock, reset by the
    ``sync`` domain's reset or by ``reset`` (a signal; None: the domain's alone).

    On an ECP5 platform that reset is one net to most of the core's flip-flops (about 12,000 in
    ``paper-x2``), and nextpnr-ecp5 routes it as a logic net. Here it leaves a global buffer
    (``DCCA``) onto a clock network instead, and the core runs in a domain of its own, ``core``,
    on the same clock, reset by that buffer alone. (The iCE40's nextpnr promotes high-fanout
    resets by itself; elsewhere, and in simulation, the core stays in ``sync``.)
    """
    if getattr(platform, "family", None) == "ecp5":
        m.domains.core = ClockDomain("core")
        rst = ResetSignal("sync", allow_reset_less=True)
        if reset is not None:
            rst = rst | reset
        core_reset = Signal()
        m.submodules.core_reset = Instance("DCCA", i_CLKI=rst, i_CE=Const(1),
                                           o_CLKO=core_reset)
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")),
                     ResetSignal("core").eq(core_reset)]
        m.submodules.core = DomainRenamer("core")(core)
    elif reset is not None:
        m.submodules.core = ResetInserter(reset)(core)
    else:
        m.submodules.core = core


class SynthWrapper(Elaboratable):
    """The training core with LFSR-driven inputs, XOR-folded outputs and a PLL clock.

    Parameters
    ----------
    params : CoreParams
        The core to build.
    clock_hz : float
        Target frequency of the core's ``sync`` clock (the PLL output).
    family : str
        ``"ecp5"`` or ``"ice40"``.
    f_in : float
        The board oscillator's frequency (Hz).
    led : tuple
        The LED's resource: ``(name, number)`` or ``(name, number, subsignal)``.

    Members
    -------
    core : TrainingCore
    f_sync : float
        The frequency the PLL actually makes (Hz), within 1% of ``clock_hz``.

    Raises
    ------
    ValueError
        If the PLL cannot make ``clock_hz`` from ``f_in``.
    """

    def __init__(self, params, clock_hz, *, family, f_in, led=("led", 0)):
        # The PLL first: a clock it cannot make is refused before the core is created.
        self.pll = pll_config(family, f_in, clock_hz)
        self.family = family
        self.f_sync = self.pll["f_out"]
        self.led = tuple(led)
        self.core = TrainingCore(params)

    def elaborate(self, platform):
        m = Module()
        add_pll_clock(m, platform, self.pll)
        core = self.core
        add_core(m, platform, core)

        # Inputs: a 32-bit Galois LFSR (x^32 + x^22 + x^2 + x + 1), its bits spread cyclically
        # over every input port bit, so no input is constant.
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x80200003, lfsr >> 1))
        inputs = [core.i.valid, core.i.payload, core.o.ready, core.schedule, core.threshold,
                  core.batch, core.infer, core.rb_addr, core.wr_addr, core.wr_data,
                  core.wr_en]
        bit = 0
        for port in inputs:
            for i in range(len(Value.cast(port))):
                m.d.comb += Value.cast(port)[i].eq(lfsr[bit % 32])
                bit += 7         # coprime with 32: neighbouring bits differ

        # Outputs: every bit into one registered XOR, on an LED. Not the core's own counters:
        # as in the host link's bitstreams, which count the same events in a counter bank
        # (board_top), from the engines' busy flags and the results; those are folded in.
        outputs = [core.i.ready, core.o.valid, core.o.payload, core.idle, core.rb_data,
                   core.stash_slot, core.stash_valid, core.fwd_active, core.bwd_active,
                   core.upd_active]
        # Each output bit is registered first and the XOR runs in two registered levels, so
        # that the wrapper's own fold is not the path measured (the 85F's critical path with
        # a one-level fold at adba6c4 ran from a weights block RAM's output across the die
        # through the whole fold: 13.77 ns).
        bits = Cat(*(Value.cast(v) for v in outputs))
        bits_q = Signal(len(bits))
        parts = Signal(-(-len(bits) // 16))
        fold = Signal()
        m.d.sync += [bits_q.eq(bits),
                     parts.eq(Cat(*(bits_q[i:i + 16].xor() for i in range(0, len(bits), 16)))),
                     fold.eq(parts.xor())]
        led = platform.request(self.led[0], self.led[1], dir="-")
        if len(self.led) > 2:
            led = getattr(led, self.led[2])
        m.submodules.led_buf = led_buf = io.Buffer("o", led)
        m.d.comb += led_buf.o.eq(fold)
        return m
