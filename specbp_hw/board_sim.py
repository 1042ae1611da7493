"""The board top in Amaranth's simulator, as a byte transport for the host program.

:class:`SimulatedBoard` has the same ``read``/``write`` interface as the serial transport of
:mod:`specbp_hw.host`, but the bytes travel bit by bit over the simulated UART lines of a
:class:`~specbp_hw.board_top.BoardTop`: the host program runs unchanged against the gateware.
Simulated time advances only while the host waits for bytes (``read``).
"""

from collections import deque

from amaranth.sim import Simulator

from .board_top import BoardTop
from .uart import line_read_byte, line_write_byte

__all__ = ["SimulatedBoard"]

_PERIOD = 1e-6      # simulated clock period (the value does not matter, only cycles count)


class SimulatedBoard:
    """A :class:`BoardTop` in simulation behind ``read``/``write``.

    Parameters
    ----------
    top : BoardTop
    read_budget : int
        Clock cycles that ``read`` simulates at most while waiting for bytes, then it returns
        what it has (like a serial port's read timeout).
    chunk : int
        Cycles simulated per step while waiting.
    watch : dict of str to Value, optional
        Signals of the design to sample like the LEDs (tests: e.g. the core's ``stash_valid``);
        their last values are in ``watched``.
    """

    def __init__(self, top, *, read_budget=2_000_000, chunk=None, watch=None):
        if not isinstance(top, BoardTop):
            raise TypeError(f"top must be a BoardTop, not {top!r}")
        self.top = top
        self._to_board = deque()
        self._from_board = deque()
        self._budget = read_budget
        self._chunk = chunk or 20 * top.divisor
        self._cycles = 0
        self._stop = False
        self.leds = {}      # LED outputs, sampled at least once per UART bit period
        self._watch = dict(watch or {})
        self.watched = {}   # the ``watch`` signals, sampled likewise
        self.sim = Simulator(top)
        self.sim.add_clock(_PERIOD)
        self.sim.add_testbench(self._drive, background=True)
        self.sim.add_testbench(self._listen, background=True)

    @property
    def cycles(self):
        """Clock cycles simulated so far."""
        return self._cycles

    async def _drive(self, ctx):
        d = self.top.divisor
        while not self._stop:
            if self._to_board:
                await line_write_byte(ctx, self.top.uart_rx, self._to_board.popleft(), d)
            else:
                await ctx.tick().repeat(d)

    async def _listen(self, ctx):
        d = self.top.divisor
        while not self._stop:
            byte = await line_read_byte(ctx, self.top.uart_tx, d, timeout=d)
            if byte is not None:
                self._from_board.append(byte)
            self.leds = {name: ctx.get(getattr(self.top, name))
                         for name in ("led_idle", "led_busy", "led_error")}
            self.watched = {name: ctx.get(sig) for name, sig in self._watch.items()}

    def close(self):
        """Let the line processes finish (a byte in flight completes) and stop."""
        if not self._stop:
            self._stop = True
            self.run(12 * self.top.divisor)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, cycles):
        """Simulate ``cycles`` clock cycles."""
        self._cycles += cycles
        self.sim.run_until(self._cycles * _PERIOD)

    def write(self, data):
        self._to_board.extend(bytes(data))

    def read(self, n):
        """Up to ``n`` bytes from the board; fewer if the read budget runs out first."""
        spent = 0
        while len(self._from_board) < n and spent < self._budget:
            self.run(self._chunk)
            spent += self._chunk
        return bytes(self._from_board.popleft() for _ in range(min(n, len(self._from_board))))
