"""Event counters kept in a small memory instead of one register and adder per counter.

Each counter has a narrow pending register that takes its increments every cycle; each cycle one
counter in turn (round robin) adds its pending value into its memory word with one shared adder.
A wide counter then costs its memory bits and a few pending bits, not a register and an adder of
its full width (on the iCE40 every counter bit is a logic cell).
"""

from amaranth.hdl import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import NO_RW_CHECK, sync_read

__all__ = ["CounterBank"]


class CounterBank(wiring.Component):
    """``len(inc_widths)`` counters of ``width`` bits, read one at a time.

    Parameters
    ----------
    inc_widths : sequence of int
        Bits of each counter's increment (1 for an event flag).
    width : int
        Bits of every counter (it wraps at ``2**width``).

    Members
    -------
    inc{i} : In(inc_widths[i])
        Added to counter ``i`` in every cycle.
    clear : In(1)
        Every counter restarts from 0: it counts the increments of the cycles after this one.
    rd_index : In(range(n)), rd_req : In(1)
        Hold ``rd_req`` with ``rd_index`` until ``rd_valid``.
    rd_valid : Out(1)
        Pulse, at most ``n + 1`` cycles after ``rd_req`` rises: ``rd_value`` holds counter
        ``rd_index`` as counted through the cycle three before the pulse (read whole; a
        ``clear`` two cycles before the pulse gives 0); it stays until the next read.
    rd_value : Out(width)

    Notes
    -----
    Round robin over ``n`` counters: counter ``k`` is read from the memory in one cycle while
    its pending value is taken (and restarted with that cycle's increment), and written back
    plus that value in the next. So a pending register holds at most ``n`` increments:
    ``inc_width + (n + 1).bit_length()`` bits. ``clear`` marks every word stale (read as 0 at its
    next write) and restarts the pending values, so no sweep over the memory is needed.
    """

    def __init__(self, inc_widths, width):
        inc_widths = tuple(inc_widths)
        if len(inc_widths) < 2 or any(not isinstance(w, int) or w < 1 for w in inc_widths):
            raise ValueError(f"inc_widths must be at least two positive integers, "
                             f"not {inc_widths!r}")
        if not isinstance(width, int) or width < max(inc_widths):
            raise ValueError(f"width must be an integer of at least the widest increment, "
                             f"not {width!r}")
        self._inc_widths = inc_widths
        self._width = width
        n = len(inc_widths)
        members = {f"inc{i}": In(w) for i, w in enumerate(inc_widths)}
        members.update({
            "clear": In(1),
            "rd_index": In(range(n)),
            "rd_req": In(1),
            "rd_valid": Out(1),
            "rd_value": Out(width),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n, width = len(self._inc_widths), self._width
        incs = [getattr(self, f"inc{i}") for i in range(n)]
        spare = (n + 1).bit_length()
        pend_width = max(self._inc_widths) + spare
        pending = [Signal(w + spare, name=f"pending{i}") for i, w in enumerate(self._inc_widths)]

        # The read and write ports never address the same word in one cycle (k_w = k - 1, and
        # n >= 2): no bypass for that case (params.sync_read).
        m.submodules.words = words = memory.Memory(shape=width, depth=n, init=[],
                                                   attrs=NO_RW_CHECK)
        rd = sync_read(m, words, "rd")
        wr = words.write_port()

        # Read stage: counter k's word is read and its pending value taken.
        k = Signal(range(n))
        m.d.sync += k.eq(Mux(k == n - 1, 0, k + 1))
        m.d.comb += rd.addr.eq(k)
        # Write stage: the word plus the value taken, or the value alone after a clear.
        k_w = Signal(range(n))
        taken = Signal(pend_width)
        stale = Signal(n)
        m.d.sync += k_w.eq(k)
        new = Signal(width)
        m.d.comb += [
            new.eq(Mux(stale.bit_select(k_w, 1), 0, rd.data) + taken),
            wr.addr.eq(k_w), wr.data.eq(new), wr.en.eq(1),
        ]
        with m.If(self.clear):
            m.d.sync += [p.eq(0) for p in pending]
            m.d.sync += [taken.eq(0), stale.eq((1 << n) - 1)]
        with m.Else():
            m.d.sync += taken.eq(Array(pending)[k])
            for i, (p, inc) in enumerate(zip(pending, incs)):
                m.d.sync += p.eq(Mux(k == i, inc, p + inc))
            m.d.sync += stale.eq(stale & ~(1 << k_w))

        m.d.sync += self.rd_valid.eq(0)
        with m.If(self.rd_req & (k_w == self.rd_index) & ~self.rd_valid):
            m.d.sync += [self.rd_value.eq(new), self.rd_valid.eq(1)]
        return m
