"""Stream helpers for the gateware testbenches (Amaranth 0.5 async testbench API).

The helpers follow the ``amaranth.lib.stream`` rules: a producer raises ``valid`` without
waiting for ``ready`` and holds the payload until the transfer; a transfer happens at a clock
edge where both ``valid`` and ``ready`` are high. Both are sampled *at* the edge with
``ctx.tick().sample(...)`` (through ``until``), so a combinational ``ready``/``valid`` of the
design under test is seen exactly as the flops see it.

The random-gap variants insert idle cycles before a beat (``valid`` or ``ready`` low) to
exercise backpressure: pass ``gaps=rng`` with any object that has a ``random()`` method
returning floats in ``[0, 1)`` (``random.Random`` or ``numpy.random.Generator``).
"""

__all__ = ["stream_put", "stream_get", "idle_cycles"]


async def idle_cycles(ctx, gaps, *, prob=0.5, limit=8):
    """Wait a random number of clock cycles: each further cycle with probability ``prob``.

    Does nothing when ``gaps`` is ``None``. At most ``limit`` cycles.
    """
    if gaps is None:
        return
    count = 0
    while count < limit and gaps.random() < prob:
        count += 1
    if count:
        await ctx.tick().repeat(count)


async def stream_put(ctx, stream, payload, *, gaps=None):
    """Send one beat on ``stream`` (the design's input) and return after its transfer.

    Raises ``valid`` with ``payload`` (anything ``ctx.set`` accepts for the payload shape, e.g.
    a list for an ``ArrayLayout`` or a dict for a ``StructLayout``), waits for the clock edge
    at which ``ready`` is high, then drops ``valid``. With ``gaps``, first idles a random number
    of cycles with ``valid`` low.
    """
    await idle_cycles(ctx, gaps)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, gaps=None):
    """Receive one beat from ``stream`` (the design's output) and return its payload.

    Raises ``ready``, waits for the clock edge at which ``valid`` is high and returns the
    payload sampled at that edge (a ``data.Const`` view for layouts, an ``int`` otherwise), then
    drops ``ready``. With ``gaps``, first idles a random number of cycles with ``ready`` low.
    """
    await idle_cycles(ctx, gaps)
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def pulse_and_wait(ctx, start, done):
    """Pulse ``start`` for one cycle, wait for ``done``, step past it; return the cycles from the
    start cycle to the ``done`` cycle, both included (an engine's latency)."""
    ctx.set(start, 1)
    await ctx.tick()
    ctx.set(start, 0)
    cycles = 1
    while not ctx.get(done):
        await ctx.tick()
        cycles += 1
    await ctx.tick()
    return cycles
