"""A synchronous FIFO in one block RAM, read without a read-first bypass.

Amaranth's ``SyncFIFOBuffered`` reads its memory through a synchronous port that promises the
old word when that word is written in the same cycle; Yosys builds that promise out of
registers and a multiplexer around the block RAM, and the FIFO adds an output register of its
own. This FIFO never reads a word in the cycle it is written (see :class:`BlockFIFO`), so its
memory is marked ``no_rw_check`` and the block RAM's own output register holds the head.
"""

from amaranth.hdl import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .params import NO_RW_CHECK, sync_read

__all__ = ["BlockFIFO"]


class BlockFIFO(wiring.Component):
    """First-word-fall-through FIFO of ``depth`` words of ``width`` bits.

    Parameters
    ----------
    width : int
    depth : int
        Words held (2 or more); any depth, not only powers of two.
    poison_collisions : bool
        For tests: a memory read in the cycle its word is written gives the inverted word
        (:func:`~specbp_hw.params.sync_read`), to show that no such read reaches ``r_data``
        while ``r_rdy`` is high.

    Members
    -------
    w_data : In(width), w_en : In(1), w_rdy : Out(1)
        A word is written in a cycle with ``w_en`` and ``w_rdy``; ``w_rdy`` (``level !=
        depth``) is a register.
    r_data : Out(width), r_rdy : Out(1), r_en : In(1)
        ``r_data`` is the oldest word while ``r_rdy`` is high; ``r_en`` takes it. A word
        written into an empty FIFO is offered two cycles later.
    level : Out(range(depth + 1))
        Words held, the one offered included.

    Notes
    -----
    The head is read with the read pointer's next value, so the block RAM's output register
    holds it a cycle later. That read addresses a word written in the same cycle only when the
    FIFO holds no word there yet (``level - popped == 0``); ``r_rdy`` is then low in the next
    cycle, and the read repeats. A full FIFO takes no write, so the write pointer never meets a
    held word.
    """

    def __init__(self, width, depth, *, poison_collisions=False):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer of at least 2, not {depth!r}")
        self._width, self._depth = width, depth
        self._poison = bool(poison_collisions)
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1, init=1),
            "r_data": Out(width), "r_rdy": Out(1), "r_en": In(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.storage = storage = memory.Memory(shape=self._width, depth=depth, init=[],
                                                       attrs=NO_RW_CHECK)
        wr = storage.write_port()
        rd = sync_read(m, storage, "head", poison_from=wr if self._poison else None)

        def succ(ptr):
            return Mux(ptr == depth - 1, 0, ptr + 1)

        w_ptr = Signal(range(depth))
        r_ptr = Signal(range(depth))
        push = self.w_en & self.w_rdy
        pop = self.r_en & self.r_rdy
        r_ptr_next = Mux(pop, succ(r_ptr), r_ptr)
        level_next = self.level + push - pop
        m.d.comb += [
            wr.addr.eq(w_ptr), wr.data.eq(self.w_data), wr.en.eq(push),
            rd.addr.eq(r_ptr_next), self.r_data.eq(rd.data),
        ]
        m.d.sync += [
            r_ptr.eq(r_ptr_next),
            self.level.eq(level_next),
            # ``level != depth`` as a register: the writer's handshake starts at a flip-flop
            # (the core's result handshake, from the results FIFO's level, ended in its slot
            # table on the 25F's critical path at 5d889db).
            self.w_rdy.eq(level_next != depth),
            # The word read now was written before this cycle: offered in the next.
            self.r_rdy.eq(self.level - pop != 0),
        ]
        with m.If(push):
            m.d.sync += w_ptr.eq(succ(w_ptr))
        return m
