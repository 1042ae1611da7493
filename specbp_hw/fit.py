"""Will a core configuration fit an FPGA part? An estimate made before any tool runs.

Block RAM. The core's memories and their ports are those of :mod:`specbp_hw.core` (its module
docstring lists them) plus the softmax's ``2**-f`` tables (:class:`specbp_hw.softmax.Softmax`):

- weights + biases: two read ports and a write port, one read port on the write port's
  address (``shared_rw``): on the ECP5 Yosys stores the memory once, on both ports of the
  block RAMs, on the iCE40 (one read port per EBR) once per read port;
- gradient accumulators, input buffer, stash pixels, stash activations: one read port and one
  write port each, on separate addresses (simple dual port);
- softmax tables: ``ceil(ways / 2)`` ROMs with two read ports each.

The core's and the host link's memories leave a read of a word written in the same cycle
undefined (``no_rw_check``, see ``params.sync_read``): Yosys builds no logic around a block RAM
to make such a read give the old word.

Each memory is mapped the way Yosys' ``memory_libmap`` maps it on the part's block RAM:

- ECP5 DP16KD (18 Kbit): 16K x 1 ... 1K x 18 with two ports, and 512 x 36 with one read and
  one write port; a memory takes the configuration that needs the fewest blocks, or
  distributed RAM where that is cheaper by Yosys' costs (:func:`bram_blocks`);
- iCE40 EBR (4 Kbit): 2K x 2 ... 256 x 16, one read and one write port. The UltraPlus SPRAMs
  (16K x 16, one port for both reading and writing) cannot hold any of the core's memories:
  each reads and writes at different addresses in the same cycle.

Multipliers. Each engine has ``K x N`` multipliers (forward: input x weight; backward: input or
weight x delta), the update engine ``K x N`` multiplications by the learning rate (a constant,
which Yosys still maps to a DSP; where the DSPs do not suffice, the build flow has Yosys build
them in logic instead, see :func:`lr_in_logic`) and the softmax ``2 * ways``. (The stash
addresses ``slot * words`` come from tables, :meth:`CoreParams.slot_bases`, not products.) A
product with an operand wider than the DSP's (ECP5: 18 bits, iCE40: 16) takes several DSPs;
Yosys leaves products with an operand (or operand slice) under 2 bits (iCE40: a result under
11 bits) in logic.

Logic. A linear estimate in the multiply-accumulate lanes, calibrated on measured builds, see
:func:`estimate_luts`.

The host link (``link=True``; the bitstreams' default top) adds its memories
(:func:`link_memories`: the sample buffer and two FIFOs, mapped as above) and a measured
constant of logic and flip-flops.
"""

import math
from dataclasses import dataclass, field

from amaranth.hdl import Shape

from golden.fixed import LOG2E

from .boards import Device
from .params import CoreParams

__all__ = ["MemoryNeed", "Estimate", "core_memories", "link_memories", "core_multipliers",
           "bram_blocks", "estimate", "fit_problems", "lr_in_logic", "LR_MULTIPLIERS"]

# (depth, width, needs only one read and one write port)
_ECP5_CONFIGS = [(16384, 1, False), (8192, 2, False), (4096, 4, False), (2048, 9, False),
                 (1024, 18, False), (512, 36, True)]
_ICE40_CONFIGS = [(2048, 2, True), (1024, 4, True), (512, 8, True), (256, 16, True)]


def _width(shape):
    return Shape.cast(shape).width


@dataclass(frozen=True)
class MemoryNeed:
    """One memory of the core: ``width`` x ``depth`` bits, its read and write ports."""

    name: str
    width: int
    depth: int
    read_ports: int
    write_ports: int
    shared_rw: bool = False     # one read port on the write port's address

    @property
    def bits(self):
        return self.width * self.depth


def core_memories(params):
    """The :class:`MemoryNeed` of every memory of a core with ``params``."""
    p = params
    fmt = p.fmt
    mems = [
        MemoryNeed("weights", _width(p.weight_word), p.depth, 2, 1, shared_rw=True),
        MemoryNeed("grads", _width(p.grad_word), p.depth, 1, 1),
        MemoryNeed("xbuf", _width(p.x_word), p.xbuf_depth, 1, 1),
        MemoryNeed("stash_x", _width(p.x_word), p.stash_x_depth, 1, 1),
        MemoryNeed("stash_act", _width(p.act_word), p.slots * p.act_words_per_slot, 1, 1),
    ]
    ways = p.softmax_ways
    for copy in range(-(-ways // 2)):
        mems.append(MemoryNeed(f"softmax_table{copy}", fmt.exp_frac + 1,
                               1 << fmt.exp_index_bits, min(2, ways - 2 * copy), 0))
    return mems


LR_MULTIPLIERS = "update (x lr)"


def link_memories(params):
    """The :class:`MemoryNeed` of the host link's memories (:class:`specbp_hw.board_top.BoardTop`
    with its default result buffer): the sample buffer, its two FIFOs (``BlockFIFO``) and the
    counter bank. (The INFO reply's ROM of about 20 bytes goes to logic.)"""
    from .board_top import RX_FIFO_DEPTH, BoardTop, sample_buffer_rows
    from .core import COUNTER_WIDTH, result_layout
    from .protocol import COUNTER_NAMES
    p = params
    return [
        MemoryNeed("link sample buffer", _width(p.pixel_word), sample_buffer_rows(p), 1, 1),
        MemoryNeed("link receive FIFO", 8, RX_FIFO_DEPTH, 1, 1),
        MemoryNeed("link result FIFO", result_layout(p).size, BoardTop.RESULT_DEPTH, 1, 1),
        MemoryNeed("link counters", COUNTER_WIDTH, len(COUNTER_NAMES), 1, 1),
    ]


def core_multipliers(params):
    """``(name, count, a_width, b_width)`` of the core's multipliers (signed widths)."""
    p = params
    fmt = p.fmt
    KN = p.block
    dw = max(fmt.delta.width, fmt.prob_frac + 1)
    return [
        ("forward", KN, p.input_width, fmt.weight.width),
        ("backward", KN, max(p.input_width, fmt.weight.width), dw),
        (LR_MULTIPLIERS, KN, fmt.update.width, fmt.lr_int(p.lr).bit_length() + 1),
        ("softmax p x R", p.softmax_ways, fmt.exp_frac + 1, fmt.recip_frac + 1),
        ("softmax t x LOG2E", p.softmax_ways, fmt.act.width, LOG2E.bit_length()),
    ]


def dsps_per_multiplier(a_width, b_width, device):
    """DSP blocks of one ``a_width`` x ``b_width`` product on ``device`` (0: left to logic).

    As Yosys' ``mul2dsp`` splits it: each operand into slices of the DSP's width; a product of
    slices goes to a DSP unless a slice is under 2 bits (iCE40: or the product under 11 bits),
    which logic does.
    """
    w = device.dsp_width

    def slices(n):
        return [w] * (n // w) + ([n % w] if n % w else [])

    return sum(1 for a in slices(a_width) for b in slices(b_width)
               if a >= 2 and b >= 2 and (device.family != "ice40" or a + b >= 11))


def lutram_cells(mem, device):
    """ECP5 distributed RAM cells (``TRELLIS_DPR16X4``, 16 x 4, one write and one read port)
    that ``mem`` needs, one copy per read port; None where there is no distributed RAM (iCE40)
    or the memory has no write port or more than one."""
    if device.family != "ecp5" or mem.write_ports != 1:
        return None
    return mem.read_ports * math.ceil(mem.depth / 16) * math.ceil(mem.width / 4)


def _lutram_cost(mem, cells):
    """Yosys' cost of ``mem`` in distributed RAM: 4 per cell, and half a point per bit of the
    multiplexers and write-enable decoders over the 16-word cells (``memory_libmap``'s
    ``FACTOR_MUX`` and ``FACTOR_DEMUX``)."""
    rows = math.ceil(mem.depth / 16)
    cost = 4 * cells + 0.5 * (rows - 1) * mem.width * mem.read_ports
    return cost + (0.5 * rows if rows > 1 else 0)


def bram_blocks(mem, device):
    """Block RAMs of ``mem`` on ``device`` (0 when Yosys puts it in distributed RAM).

    Yosys' ``memory_libmap`` takes the cheapest mapping by the costs in its library files and
    its own: 128 per DP16KD, 4 per ``TRELLIS_DPR16X4`` on ECP5, the distributed RAM's read
    multiplexers (:func:`_lutram_cost`). On iCE40 the count is
    an upper bound for a width the EBR does not have (the 9-bit pixel values): Yosys may pack
    such words more tightly with the EBR's bit write masks (the stash pixels of ``pool7``: 2
    EBR, not 3).
    """
    if device.family == "ecp5":
        if mem.write_ports == 0:
            # A ROM's two read ports fit one block.
            copies, configs = math.ceil(mem.read_ports / 2), _ECP5_CONFIGS
        elif mem.shared_rw:
            # Once, on both ports: the shared read with the write, the other read.
            copies = mem.read_ports - 1
            configs = [c for c in _ECP5_CONFIGS if not c[2]]
        else:
            # Once per read port, each copy one read and one write port.
            copies, configs = mem.read_ports, _ECP5_CONFIGS
    else:
        # One read port per copy.
        copies = max(1, mem.read_ports)
        configs = _ICE40_CONFIGS
    per_copy = min(math.ceil(mem.width / w) * math.ceil(mem.depth / d) for d, w, _ in configs)
    blocks = copies * per_copy
    cells = lutram_cells(mem, device)
    if cells is not None and _lutram_cost(mem, cells) < 128 * blocks:
        return 0
    return blocks


@dataclass
class Estimate:
    """Resources of a core configuration on a part, as estimated before any tool runs."""

    bram: int
    dsps: int
    luts: int | None = None
    ffs: int | None = None
    memories: list = field(default_factory=list)     # (MemoryNeed, blocks)
    multipliers: list = field(default_factory=list)  # (name, count, dsps each)

    def as_dict(self):
        return {"bram": self.bram, "dsps": self.dsps, "luts": self.luts, "ffs": self.ffs,
                "memories": {m.name: {"width": m.width, "depth": m.depth, "blocks": b}
                             for m, b in self.memories},
                "multipliers": {n: {"count": c, "dsps_each": d} for n, c, d in
                                self.multipliers}}


# Logic per multiply-accumulate lane and fixed, measured with Yosys 0.70 / nextpnr 0.11 (YoWASP)
# on the synthesis wrapper at commit 99012c6 (docs/BUILD.md, "Measured"; the wrapper folds the
# engines' busy flags, not the core's own counters, which the bitstreams count in the link's
# counter bank). ECP5, in Yosys LUT4 + 2 x CCU2C (two LUTs per carry cell): paper (16 MACs)
# 16,780, paper-x4 (64 MACs) 46,554, so 620 per MAC and 6,855 fixed; the learning-rate products
# in logic (booth) add 172 each (paper-x4: 57,585); nextpnr's TRELLIS_COMB is 1.076 times that
# (h8-n8 with the host link: 12,424 for 11,542; 1.087 for pool7 alone, 1.127 with the link).
# Flip-flops: 7,870 and 19,745, so 247 per MAC and 3,912 fixed. iCE40: the 1-MAC pool7 core (its
# learning-rate product in logic) packs into 5,107 logic cells with 2,161 flip-flops (4,970
# with the product in a DSP); further lanes are taken at the ECP5 rate. The iCE40 core shrinks
# with the datapath width (FixedFormat.act.width): pool7-q9 (9-bit values, 14-bit weights)
# packs into 3,551 logic cells with 1,487 flip-flops, so 203 cells and 96 flip-flops a bit
# (measured at the same commit's core).
_ECP5_LUT_FIXED, _LUT_PER_MAC, _LUT_PER_LR_LOGIC, _ECP5_COMB_PER_LUT = 6855, 620, 172, 1.076
_ECP5_FF_FIXED, _FF_PER_MAC = 3912, 247
_ICE40_LC_ONE_MAC, _ICE40_FF_ONE_MAC = 5107, 2161
_ICE40_LC_PER_BIT, _ICE40_FF_PER_BIT = 203, 96
# The UART host link (board_top.PlatformTop, protocol version 2, with the counter bank, the
# block-RAM FIFOs and registers as narrow as the longest frame) in place of the wrapper, measured
# on pool7 (Yosys 0.70, nextpnr 0.11; the core as at commit 99012c6): ULX3S 25F TRELLIS_COMB
# 4,052 -> 5,808 and TRELLIS_FF 2,168 -> 2,832; iCEBreaker ICESTORM_LC 4,970 -> 6,578 and
# SB_DFF* 2,161 -> 2,722 (pool7-q9: 3,551 -> 5,131).
_LINK_LUTS = {"ecp5": 5808 - 4052, "ice40": 6578 - 4970}
_LINK_FFS = {"ecp5": 2832 - 2168, "ice40": 2722 - 2161}


def estimate_luts(params, device, *, lr_in_logic=False):
    """LUTs (ECP5: nextpnr's TRELLIS_COMB; iCE40: logic cells) and flip-flops of the core in
    the synthesis wrapper: a linear estimate in the multiply-accumulate lanes (``K x N``),
    calibrated on measured builds of 784-input networks (see the constants above). Network
    size is not modelled: for a small network the fixed part is smaller, and the estimate
    too high (pool7, 49-8-10, on ECP5 at commit 99012c6: 8,043 estimated, 4,052 measured), so
    the check errs on the side of refusing only for small networks."""
    macs = params.block
    lr = _LUT_PER_LR_LOGIC * macs if lr_in_logic else 0
    if device.family == "ecp5":
        luts = _ECP5_COMB_PER_LUT * (_ECP5_LUT_FIXED + _LUT_PER_MAC * macs + lr)
        ffs = _ECP5_FF_FIXED + _FF_PER_MAC * macs
    else:
        # The measured pool7 build had its one learning-rate product in logic.
        narrower = 16 - params.fmt.act.width
        luts = (_ICE40_LC_ONE_MAC - _LUT_PER_LR_LOGIC + _LUT_PER_MAC * (macs - 1) + lr
                - _ICE40_LC_PER_BIT * narrower)
        ffs = _ICE40_FF_ONE_MAC + _FF_PER_MAC * (macs - 1) - _ICE40_FF_PER_BIT * narrower
    return round(luts), round(ffs)


def estimate(params, device, *, logic=True, lr_in_logic=False, link=False):
    """:class:`Estimate` of ``params`` (a CoreParams) on ``device`` (a boards.Device).

    ``lr_in_logic``: the update engine's products by the constant learning rate are built in
    logic (Yosys' ``booth`` pass), not DSPs. ``link``: the core behind the UART host link (its
    memories and logic added).
    """
    if not isinstance(params, CoreParams):
        raise TypeError(f"params must be a CoreParams, not {params!r}")
    if not isinstance(device, Device):
        raise TypeError(f"device must be a boards.Device, not {device!r}")
    mems = [(m, bram_blocks(m, device)) for m in
            core_memories(params) + (link_memories(params) if link else [])]
    mults = [(name, count, 0 if lr_in_logic and name == LR_MULTIPLIERS
              else dsps_per_multiplier(a, b, device))
             for name, count, a, b in core_multipliers(params)]
    est = Estimate(bram=sum(b for _, b in mems), dsps=sum(c * d for _, c, d in mults),
                   memories=mems, multipliers=mults)
    if logic:
        est.luts, est.ffs = estimate_luts(params, device, lr_in_logic=lr_in_logic)
        if link:
            est.luts += _LINK_LUTS[device.family]
            est.ffs += _LINK_FFS[device.family]
    return est


def lr_in_logic(params, device, mode="auto"):
    """Whether the update's products by the learning rate go to logic: ``mode`` ``"dsp"``,
    ``"logic"``, or ``"auto"`` (logic only when the DSPs would not suffice otherwise)."""
    if mode not in ("auto", "dsp", "logic"):
        raise ValueError(f"lr multipliers must be auto, dsp or logic, not {mode!r}")
    if mode != "auto":
        return mode == "logic"
    return estimate(params, device, logic=False).dsps > device.dsps


def fit_problems(params, device, *, lr_mode="auto", link=False):
    """What of ``params`` does not fit ``device``: a list of short phrases (empty: it fits).
    ``link``: with the UART host link."""
    est = estimate(params, device, lr_in_logic=lr_in_logic(params, device, lr_mode),
                   link=link)
    problems = []
    if est.bram > device.bram:
        big = max(est.memories, key=lambda mb: mb[1])
        kind = "DP16KD" if device.family == "ecp5" else "EBR"
        problems.append(f"block RAM: {est.bram} {kind} needed (the {big[0].name} memory alone "
                        f"{big[1]}), {device.bram} available")
    if est.dsps > device.dsps:
        problems.append(f"multipliers: {est.dsps} DSPs needed, {device.dsps} available")
    if est.luts > device.luts:
        unit = "LUTs" if device.family == "ecp5" else "logic cells"
        problems.append(f"logic: about {est.luts} {unit} needed (estimate), {device.luts} "
                        f"available")
    return problems
