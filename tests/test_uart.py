# amaranth: UnusedElaboratable=no
"""The UART against the bit-level line model, in Amaranth's simulator."""

import random

import pytest
from amaranth.sim import Simulator

from specbp_hw.testing import stream_get, stream_put
from specbp_hw.uart import UARTRx, UARTTx, line_read_byte, line_write_byte


def run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("divisor", [4, 5, 16])
def test_tx_sends_8n1(divisor):
    dut = UARTTx(divisor)
    data = [0x00, 0xFF, 0x55, 0xA5] + [random.Random(divisor).randrange(256) for _ in range(8)]
    got = []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte, gaps=random.Random(1))

    async def line(ctx):
        for _ in data:
            got.append(await line_read_byte(ctx, dut.tx, divisor, timeout=100 * divisor))

    run(dut, line, producer)
    assert got == data


@pytest.mark.parametrize("divisor, period", [(4, 4), (7, 7), (16, 16), (32, 33), (32, 31)])
def test_rx_receives_8n1(divisor, period):
    dut = UARTRx(divisor)
    rng = random.Random(divisor + period)
    data = [0x00, 0xFF, 0x5A] + [rng.randrange(256) for _ in range(10)]
    got = []

    async def line(ctx):
        for byte in data:
            for _ in range(rng.randrange(3)):              # idle time between bytes
                await ctx.tick()
            await line_write_byte(ctx, dut.rx, byte, period)

    async def consumer(ctx):
        for _ in data:
            got.append(await stream_get(ctx, dut.o))

    run(dut, consumer, line)
    assert got == data


def test_rx_framing_error_glitch_and_overrun():
    divisor = 8
    dut = UARTRx(divisor)
    events = {"framing": 0, "overrun": 0}
    got = []

    async def line(ctx):
        await line_write_byte(ctx, dut.rx, 0x3C, divisor, stop=0)    # dropped: low stop bit
        await ctx.tick().repeat(3 * divisor)
        ctx.set(dut.rx, 0)                                          # a glitch shorter than
        await ctx.tick().repeat(2)                                  # half a bit period
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await line_write_byte(ctx, dut.rx, 0x81, divisor)           # held, not taken yet
        await line_write_byte(ctx, dut.rx, 0x42, divisor)           # dropped: overrun
        await ctx.tick().repeat(2 * divisor)
        await line_write_byte(ctx, dut.rx, 0x99, divisor, stop=1)

    async def monitor(ctx):
        for _ in range(60 * divisor):
            await ctx.tick()
            events["framing"] += ctx.get(dut.framing_error)
            events["overrun"] += ctx.get(dut.overrun)

    async def consumer(ctx):
        # Take nothing until both held bytes have arrived, then drain.
        await ctx.tick().repeat(40 * divisor)
        got.append(await stream_get(ctx, dut.o))
        got.append(await stream_get(ctx, dut.o))

    run(dut, consumer, line, monitor)
    assert got == [0x81, 0x99]
    assert events == {"framing": 1, "overrun": 1}


def test_divisor_is_checked():
    with pytest.raises(ValueError, match="at least 4"):
        UARTRx(3)
    with pytest.raises(ValueError, match="integer"):
        UARTTx(8.5)
