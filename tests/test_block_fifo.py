# amaranth: UnusedElaboratable=no
"""The block-RAM FIFO against a queue, cycle by cycle, with collided reads poisoned."""

import collections
import random

import pytest
from amaranth.sim import Simulator

from specbp_hw.block_fifo import BlockFIFO


@pytest.mark.parametrize("width, depth", [(8, 16), (38, 5), (3, 2)])
def test_fifo_against_a_queue(width, depth):
    """Random writes and reads, in phases that fill, drain and stream it: every offered word is
    the oldest held (a memory read collided with a write would read inverted); a word is offered
    exactly two cycles after it is written into a FIFO where it is the oldest, or as soon as the
    words before it are taken; level and w_rdy follow the queue."""
    dut = BlockFIFO(width, depth, poison_collisions=True)
    rng = random.Random(width * 100 + depth)
    stats = collections.Counter()

    async def testbench(ctx):
        queue = collections.deque()     # (word, cycle written)
        for cycle in range(4000):
            phase = (cycle // 200) % 3  # filling, draining, streaming
            w_en = rng.random() < (0.8, 0.2, 0.6)[phase]
            r_en = rng.random() < (0.2, 0.8, 0.6)[phase]
            word = rng.getrandbits(width)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, word)
            ctx.set(dut.r_en, r_en)
            assert ctx.get(dut.level) == len(queue)
            assert ctx.get(dut.w_rdy) == (len(queue) < depth)
            offered = bool(queue) and queue[0][1] <= cycle - 2
            assert ctx.get(dut.r_rdy) == offered, cycle
            if offered:
                assert ctx.get(dut.r_data) == queue[0][0], cycle
                if r_en:
                    queue.popleft()
                    stats["read"] += 1
            if w_en and ctx.get(dut.w_rdy):
                queue.append((word, cycle))
                stats["written"] += 1
            stats["full"] += not ctx.get(dut.w_rdy)
            stats["back to back"] += offered and r_en and len(queue) > 0
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert stats["read"] > 500 and stats["full"] > 50 and stats["back to back"] > 200


@pytest.mark.parametrize("width, depth, match", [
    (0, 4, "width must be a positive integer"),
    (8, 1, "depth must be an integer of at least 2"),
])
def test_bad_parameters(width, depth, match):
    with pytest.raises(ValueError, match=match):
        BlockFIFO(width, depth)
