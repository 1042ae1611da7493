"""UART receiver and transmitter, 8N1 (one start bit, 8 data bits LSB first, one stop bit).

The bit period is ``divisor`` clock cycles (e.g. 100 MHz / 115,200 baud -> 868). The receiver
synchronises the line with two flip-flops, confirms the start bit at its middle and samples each
data bit and the stop bit in the middle of its period; a byte whose stop bit is low is dropped
and flagged as a framing error. Bytes leave and enter as ``amaranth.lib.stream`` beats.

The same file holds the bit-level line model used by the tests and the simulated board
(:func:`line_write_byte`, :func:`line_read_byte`): an ideal UART on the other end of the wire,
written as async testbench coroutines.
"""

from amaranth.hdl import *
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "check_divisor", "line_write_byte", "line_read_byte"]


def check_divisor(divisor):
    """Return ``divisor`` if it is a usable bit period in clock cycles; ValueError otherwise."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"UART divisor (clock cycles per bit) must be an integer of at least "
                         f"4, not {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1)
        The serial line (idle high); asynchronous, synchronised inside.
    o : Out(stream.Signature(8))
        Received bytes. ``valid`` rises 2 + 9.5 bit periods after the start bit's falling
        edge and stays up until the transfer.
    framing_error : Out(1)
        Pulse: a byte was dropped because its stop bit was low.
    overrun : Out(1)
        Pulse: a byte was dropped because the previous one had not been taken yet.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        line = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(d))
        bits = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # The falling edge of the start bit: look again half a period later.
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(~line):
                        m.d.sync += [timer.eq(d - 1), bits.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"     # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), bits.eq(bits + 1),
                                 timer.eq(d - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                # Wait for the line to return high before looking for the next start bit.
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; taken (``ready``) when the transmitter is idle, one byte every
        ``10 * divisor`` cycles at most.
    tx : Out(1)
        The serial line, registered, idle high.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=1)
        left = Signal(range(11))
        m.d.comb += self.i.ready.eq(left == 0)
        m.d.sync += self.tx.eq(Mux(left != 0, shreg[0], 1))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(C(0, 1), self.i.payload, C(1, 1))), left.eq(10),
                         timer.eq(d - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(shreg >> 1), left.eq(left - 1), timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


# ---- bit-level line model (the other end of the wire) ------------------------------------------

async def line_write_byte(ctx, line, byte, period, *, stop=1):
    """Drive one 8N1 byte onto ``line`` (the design's rx), ``period`` clock cycles per bit.

    ``stop=0`` sends a low stop bit (a framing error). Leaves the line high.
    """
    for bit in [0, *((byte >> i) & 1 for i in range(8)), stop]:
        ctx.set(line, bit)
        await ctx.tick().repeat(period)
    ctx.set(line, 1)


async def line_read_byte(ctx, line, period, *, timeout=None):
    """Receive one 8N1 byte from ``line`` (the design's tx), sampled in the middle of each bit.

    Returns the byte, or None when no start bit came within ``timeout`` cycles. Raises
    AssertionError when the stop bit is low (the transmitter broke the framing).
    """
    if timeout is None:
        if ctx.get(line):
            await ctx.tick().until(line == 0)
    else:
        waited = 0
        while ctx.get(line):
            await ctx.tick()
            waited += 1
            if waited >= timeout:
                return None
    await ctx.tick().repeat(period // 2)
    assert ctx.get(line) == 0, "start bit did not last half a bit period"
    value = 0
    for i in range(8):
        await ctx.tick().repeat(period)
        value |= ctx.get(line) << i
    await ctx.tick().repeat(period)
    assert ctx.get(line) == 1, "stop bit is low"
    return value
