"""Replicated registers: one copy of a control register per lane, kept apart through synthesis.

A register that steers every lane of a wide datapath (the update engine's parameter kind,
a stage's valid bit) is one flip-flop with a net to every lane; on a large ECP5 the lanes'
DSP blocks and block RAMs sit across the die, and that net becomes the longest route of the
design (the 64-MAC core's critical path at commit d353efe: the update engine's ``kind1`` into
every lane's clip, 16 ns of routing in 19). A copy per lane lets the placer put each copy
beside the lane it steers; the route across the die then ends at a flip-flop instead of
passing through the lane's logic. The copies load the same value in the same cycle, so
replication costs flip-flops and no cycle.

Yosys merges identical flip-flops (``opt_merge``), ``keep`` on the signals or not. Each copy
is therefore a submodule of its own, :class:`Replica`, whose module name ends in
``_replica<i>``: the ECP5 board flow (:mod:`specbp_hw.build`) marks those modules
``keep_hierarchy`` before synthesis (:data:`YOSYS_KEEP`), so that no pass sees two copies in
one module, and flattens the netlist before the LUT mapping (:data:`YOSYS_FLATTEN`), after
which no pass that merges cells runs. The iCE40 flow does not keep them apart.

The copies are physical only: they load the same value in every cycle, so one register
behaves as all of them. The engines make the copies for a board (``apart``: a platform given
to their ``elaborate``) and one register for the simulators and the Verilog export, where
hundreds of one-lane processes cost the compiled simulation a third of its speed (the paper
core: 560,000 cycles/s with the copies, 910,000 without, on the same machine load).
"""

from amaranth.hdl import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Replica", "replicate", "YOSYS_KEEP", "YOSYS_FLATTEN"]

# The ECP5 flow's Yosys commands: before synthesis, and before the LUT mapping.
YOSYS_KEEP = "setattr -mod -set keep_hierarchy 1 *_replica*"
YOSYS_FLATTEN = "flatten"


class Replica(wiring.Component):
    """One copy of a register: ``q`` loads ``d`` at the clock edge when ``en`` is high.

    Latency 1 cycle (a register); ``q`` starts at 0.

    Parameters
    ----------
    shape : shape-like
        The register's shape.
    """

    def __init__(self, shape):
        super().__init__({"d": In(shape), "en": In(1, init=1), "q": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.q.eq(self.d)
        return m


def replicate(m, name, d, count, *, en=1, apart=True):
    """``count`` copies of a register that loads ``d`` (when ``en``), as submodules
    ``{name}_replica{i}`` of ``m``; returns their outputs, one per copy.

    Every copy holds the same value in every cycle: use copy ``i`` where lane ``i`` (or group
    ``i``) needs the register. With ``apart`` false there is one register, a submodule
    ``{name}_replica0``, and its output stands for every copy.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"Replica count must be a positive integer, not {count!r}")
    d = Value.cast(d)
    outs = []
    for i in range(count if apart else 1):
        r = m.submodules[f"{name}_replica{i}"] = Replica(d.shape())
        m.d.comb += [r.d.eq(d), r.en.eq(en)]
        outs.append(r.q)
    return outs if apart else outs * count
