"""Board-agnostic top: the training core behind a framed UART link, and status LEDs.

The protocol is specified in ``docs/HOST_LINK.md`` (constants and CRC in
:mod:`specbp_hw.protocol`). The engine handles one frame at a time: it receives a whole
request, checks its CRC, command, length and values, and only then acts on it; so a corrupt,
truncated or malformed frame gets an error reply and changes no training state. An uploaded
sample is buffered in block RAM while its frame arrives and streamed into the core only after
the checks pass; so are the weight words of a LOAD_WEIGHTS frame, which are written into the
core's weight memory (through its host write port) only after the checks. RESET puts the core's
registers back to their power-on values (a reset of its own,
:func:`specbp_hw.synth_top.add_core`), not its memories, nor the multipliers' product registers
(:mod:`specbp_hw.dsp`), which no stage reads until its valid bit is set again.

A platform wrapper connects ``uart_rx``/``uart_tx`` to the board's serial pins and the LED
outputs to its LEDs.
"""

from amaranth.hdl import *
from amaranth.lib import data, io, memory, wiring
from amaranth.lib.wiring import In, Out

from .block_fifo import BlockFIFO
from .core import ACCEPTED, COUNTER_WIDTH, REJECTED, TrainingCore, result_layout
from .counter_bank import CounterBank
from .params import NO_RW_CHECK, CoreParams, sync_read
from .protocol import (COUNTER_BYTES, COUNTER_NAMES, REPLY_SOF, REQUEST_SOF, RESULT_BYTES,
                       STATUS_BYTES, Cmd, Status, info_bytes, load_data_bytes,
                       max_request_payload, weight_word_bytes)
from .synth_top import add_core
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["BoardTop", "PlatformTop", "RX_FIFO_DEPTH", "crc16_step", "initial_weights",
           "link_timeout", "mul_const", "sample_buffer_rows", "uart_divisor"]

RX_FIFO_DEPTH = 16      # received bytes buffered while the engine streams or replies


def zext(value, bits):
    """``value`` zero-extended (or truncated) to ``bits`` bits."""
    value = Value.cast(value)
    return Cat(value, C(0, bits - len(value))) if len(value) < bits else value[:bits]


def below(value, bound):
    """``value < bound`` (unsigned) for a constant ``bound`` >= 1, built as a zero test of the
    bits above ``bound``'s width and a compare of the bits below: Yosys builds a compare as a
    carry chain as wide as its operands (a logic cell a bit on the iCE40), a zero test in a few
    LUTs."""
    value = Value.cast(value)
    n = (bound - 1).bit_length()
    if n >= len(value):
        return value < bound
    high_zero = value[n:] == 0
    return high_zero if bound == 1 << n else high_zero & (value[:n] < bound)


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE after one more byte: combinational, 8 unrolled bit steps."""
    for i in reversed(range(8)):
        fb = crc[15] ^ byte[i]
        crc = Cat(C(0, 1), crc[:15]) ^ Mux(fb, 0x1021, 0)
        crc = crc[:16]
    return crc


def mul_const(value, factor):
    """``value * factor`` for a constant ``factor`` as shifts and adds (no multiplier block:
    it sits on a short path and a DSP there costs more time than an adder)."""
    terms = [value << b for b in range(factor.bit_length()) if factor >> b & 1]
    return sum(terms[1:], terms[0]) if terms else C(0, 1)


def sample_buffer_rows(params):
    """Words (``inputs`` pixels each) of the board's sample buffer: one sample, or one weight
    word of a LOAD_WEIGHTS frame where that is longer."""
    K = params.inputs
    return load_data_bytes(params.layers[0], K, weight_word_bytes(params)) // K


def initial_weights(params, seed=0):
    """The golden model's initial weights (fixed point) for ``params``: what a board starts from
    at power-on (the bitstreams hold those of seed 0), and what the host loads (LOAD_WEIGHTS)
    before each schedule.

    The same values as :meth:`golden.fixed_model.FixedArith.init_params` with ``seed``; they
    depend on the layer sizes, the seed and the weight format only.
    """
    from golden.config import TrainConfig
    from golden.fixed_model import FixedArith
    cfg = TrainConfig(layers=params.layers, seed=seed, lr=params.lr)
    return FixedArith(cfg, params.fmt).init_params(cfg)


class BoardTop(wiring.Component):
    """The training core, a UART (8N1) host link and status LEDs.

    Parameters
    ----------
    params : CoreParams
    divisor : int
        Clock cycles per UART bit (clock frequency / baud rate), at least 4.
    init : list of (W, b) int arrays, optional
        Power-on weights of the core (see :func:`initial_weights`); zeros if omitted. The host
        can replace them (LOAD_WEIGHTS) at any time the core is idle.
    timeout : int, optional
        Clock cycles of silence that end a truncated frame (error reply ``timeout``) and end
        the discarding after a corrupt one. Default: 1024 byte times (about 89 ms at 115,200
        baud), long enough for USB serial adapters' packet gaps.
    result_depth : int
        Results buffered on the board (2 .. 255); uploads are refused (``busy``) rather than
        let the core stall with a full buffer.
    led_hold : int
        Cycles the ``led_busy`` output stays lit after the core was last busy (so that short
        steps are visible). Default: 2**22 (about 40 ms at 100 MHz).
    poison_collisions : bool
        For tests: memory reads that collide with a write read inverted words, in the
        :class:`~specbp_hw.core.TrainingCore`, the link's FIFOs (:class:`BlockFIFO`) and its
        sample buffer (see :func:`~specbp_hw.params.sync_read`).

    Members
    -------
    uart_rx : In(1)
        Serial input (from the host), idle high.
    uart_tx : Out(1)
        Serial output (to the host), idle high.
    led_idle : Out(1)
        The core has nothing in flight (it takes settings, weight reads and loads, resets).
    led_busy : Out(1)
        The core worked within the last ``led_hold`` cycles (training or inference running).
    led_error : Out(1)
        The last frame got an error reply; cleared by the next good frame.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    led_idle: Out(1)
    led_busy: Out(1)
    led_error: Out(1)

    RESULT_DEPTH = 16

    def __init__(self, params, divisor, *, init=None, timeout=None, result_depth=RESULT_DEPTH,
                 led_hold=1 << 22, poison_collisions=False):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self._divisor = check_divisor(divisor)
        if timeout is None:
            timeout = 1024 * 10 * divisor
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 20 * divisor:
            raise ValueError(f"timeout must be an integer of at least 2 byte times "
                             f"({20 * divisor} cycles), not {timeout!r}")
        if (isinstance(result_depth, bool) or not isinstance(result_depth, int)
                or not 2 <= result_depth <= 255):
            raise ValueError(f"result_depth must be an integer from 2 to 255, "
                             f"not {result_depth!r}")
        if isinstance(led_hold, bool) or not isinstance(led_hold, int) or led_hold < 1:
            raise ValueError(f"led_hold must be a positive integer, not {led_hold!r}")
        if params.layers[0] + 2 > 0xFFFF:
            raise ValueError(f"An upload frame of {params.layers[0]} pixels exceeds the "
                             f"protocol's 65535-byte payload")
        word_bytes = weight_word_bytes(params)
        self._max_payload = max_request_payload(params.layers[0], params.inputs, word_bytes)
        if self._max_payload > 0xFFFF:
            raise ValueError(f"A weight word of {word_bytes} bytes exceeds the protocol's "
                             f"65535-byte payload")
        self._p = params
        self._timeout = timeout
        self._result_depth = result_depth
        self._led_hold = led_hold
        super().__init__()
        self.core = TrainingCore(params, init=init, poison_collisions=poison_collisions)
        self._poison = bool(poison_collisions)

    @property
    def params(self):
        return self._p

    @property
    def divisor(self):
        return self._divisor

    @property
    def timeout(self):
        return self._timeout

    @property
    def result_depth(self):
        return self._result_depth

    def elaborate(self, platform):
        m = Module()
        p = self._p
        K, rows0 = p.inputs, p.rows(0)
        core = self.core
        # RESET (one cycle) puts every register of the core back to its power-on value but the
        # products' (specbp_hw.dsp); its memories (weights, accumulators, buffers) keep their
        # contents. The reset is a register, set the cycle after the frame asks for it: as a
        # combinational signal it came from the frame decoder and the core's idle test, and on
        # an ECP5 that logic was the critical path into the reset's clock buffer (85F, 51845df:
        # 12.5 of 15.1 ns).
        rst_req = Signal()
        core_rst = Signal()
        m.d.sync += core_rst.eq(rst_req)
        # On an ECP5 the reset goes onto a clock network (synth_top.add_core).
        add_core(m, platform, core, core_rst)
        m.submodules.rx = rx = UARTRx(self._divisor)
        m.submodules.tx = tx = UARTTx(self._divisor)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]

        # Received bytes wait here while the engine is busy (streaming a sample, replying).
        m.submodules.rx_fifo = rx_fifo = BlockFIFO(8, RX_FIFO_DEPTH,
                                                   poison_collisions=self._poison)
        m.d.comb += [rx_fifo.w_data.eq(rx.o.payload), rx_fifo.w_en.eq(rx.o.valid),
                     rx.o.ready.eq(rx_fifo.w_rdy)]

        # Results of the core, read by the host with RESULTS.
        rlayout = result_layout(p)
        m.submodules.results = results = BlockFIFO(rlayout.size, self._result_depth,
                                                   poison_collisions=self._poison)
        m.d.comb += [results.w_data.eq(core.o.payload), results.w_en.eq(core.o.valid),
                     core.o.ready.eq(results.w_rdy)]
        res_done = core.o.valid & core.o.ready

        # The COUNTERS reply's counters, kept in a memory (CounterBank): they count the events
        # the core's own counters count (those are left unused here, and synthesis removes
        # them), and ``step_cycles``, the sum of the results' cycles. RESET restarts them.
        events = {
            "cycles": C(1, 1), "samples": res_done,
            "accepted": res_done & (core.o.payload.kind == ACCEPTED),
            "rejected": res_done & (core.o.payload.kind == REJECTED),
            "fwd_busy": core.fwd_active, "bwd_busy": core.bwd_active,
            "update_cycles": core.upd_active,
            "step_cycles": Mux(res_done, core.o.payload.cycles, 0),
        }
        m.submodules.counters = bank = CounterBank(
            [len(Value.cast(events[name])) for name in COUNTER_NAMES], COUNTER_WIDTH)
        for i, name in enumerate(COUNTER_NAMES):
            m.d.comb += getattr(bank, f"inc{i}").eq(events[name])
        m.d.comb += bank.clear.eq(core_rst)

        # The sample being uploaded: one word of K pixels per core beat. A LOAD_WEIGHTS
        # frame's data bytes go here the same way (K bytes a word); ``sbuf_rows`` exceeds
        # ``rows0`` only where one weight word is longer than a sample.
        word_bytes = weight_word_bytes(p)
        sbuf_rows = sample_buffer_rows(p)
        # A frame's writes end before its words are read: no read meets a write.
        m.submodules.sbuf = sbuf = memory.Memory(shape=p.pixel_word, depth=sbuf_rows, init=[],
                                                 attrs=NO_RW_CHECK)
        sb_w = sbuf.write_port()
        sb_r = sync_read(m, sbuf, "sb_r", poison_from=sb_w if self._poison else None)
        s_pixels = Signal.like(sb_r.data)       # a streamed word, registered

        # Settings (the core's registers); changed only by a checked frame while idle.
        schedule = Signal(2)
        threshold = Signal(p.threshold_width)
        batch = Signal(range(p.max_batch + 1), init=min(15, p.max_batch))
        infer = Signal()
        m.d.comb += [core.schedule.eq(schedule), core.threshold.eq(threshold),
                     core.batch.eq(batch), core.infer.eq(infer)]

        # Samples uploaded whose results are not yet in the result buffer.
        inflight = Signal(range(self._result_depth + 1))
        inflight_inc = Signal()
        m.d.sync += inflight.eq(inflight + inflight_inc - res_done)

        # Link statistics and the error latch.
        bad_frames = Signal(16)
        junk = Signal(16)
        uart_errors = Signal(16)
        last_error = Signal(8)
        error = Signal()
        with m.If(rx.framing_error | rx.overrun):
            m.d.sync += uart_errors.eq(uart_errors + 1)

        # ---- request reception --------------------------------------------------------------
        # The byte at the FIFO's head is registered before the states take it (``rx_byte``,
        # ``rx_full``): taken straight from the FIFO, its arrival and value went through the
        # CRC step and the state's choices in one path, among the 85F link's longest.
        rx_byte = Signal(8)
        rx_full = Signal()
        take = Signal()                         # consume rx_byte this cycle
        got = rx_full & take
        m.d.comb += rx_fifo.r_en.eq(~rx_full | take)
        with m.If(~rx_full | take):
            m.d.sync += [rx_full.eq(rx_fifo.r_rdy), rx_byte.eq(rx_fifo.r_data)]
        quiet = Signal(range(self._timeout + 1))
        with m.If(got):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self._timeout):
            m.d.sync += quiet.eq(quiet + 1)
        timed_out = quiet == self._timeout

        max_payload = self._max_payload
        cmd = Signal(8)
        # The longest request the checks let through, or reply: the length and byte index
        # registers are that wide (a longer request's length goes no further than LEN1).
        max_words = min(p.depth, 0xFFFF // word_bytes)      # in a WEIGHTS reply
        info = info_bytes(p, self._result_depth)
        longest = max(max_payload, len(info), STATUS_BYTES,
                      COUNTER_BYTES * len(COUNTER_NAMES),
                      1 + self._result_depth * RESULT_BYTES, max_words * word_bytes)
        length = Signal(max(8, longest.bit_length()))      # the low byte whole until LEN1
        idx = Signal(range(longest))            # payload byte index
        arg = Signal(32)                        # the first 4 payload bytes
        crc = Signal(16, init=0xFFFF)
        crc_bad = Signal()
        crc_bad_hi = Signal()
        pay_last = Signal()                     # PAYLOAD: this byte is the payload's last
        len_m2 = Signal.like(length)            # length - 2: the byte before the last at idx
        crc_byte = Signal(8)                    # the byte the CRC takes (sent, in a reply)
        crc_next = Signal(16)
        m.d.comb += [crc_byte.eq(rx_byte), crc_next.eq(crc16_step(crc, crc_byte))]
        label = Signal(8)
        flags = Signal(8)
        acc = Signal(8 * K)                     # pixels of the word being assembled
        kpos = Signal(range(K))
        wpos = Signal(range(sbuf_rows + 1))
        # The sample buffer's write port: its address and word whether or not it writes (only
        # the enable is the frame's decision). Under the decision, the address was the end of
        # the 85F link's critical path with one-hot states (96.92 MHz, e54f0cd).
        m.d.comb += [sb_w.addr.eq(wpos), sb_w.data.eq(Cat(acc[8:], rx_byte))]
        beat = Signal(range(sbuf_rows))
        # LOAD_WEIGHTS: complete weight words in the data (after the address) and the bytes
        # after the last of them, counted as they arrive; then the writing.
        max_load_words = (max_payload - 2) // word_bytes
        lw_words = Signal(range(max_load_words + 1))
        lw_part = Signal(range(word_bytes))
        lw_addr = Signal(range(p.depth + 1))    # next word to write
        lw_left = Signal(range(max_load_words + 1))
        lw_b = Signal(range(word_bytes))        # bytes of the word assembled so far
        lw_word = Signal(8 * word_bytes)        # the word being assembled, LSB byte first

        # ---- reply ------------------------------------------------------------------------
        # Payload sources: the INFO constants, the live status, counters (each latched whole
        # before its first byte), results, weight words, the results waiting (UPLOAD).
        SRC_INFO, SRC_RESULTS, SRC_WEIGHTS, SRC_STATUS, SRC_COUNTERS, SRC_LEVEL = range(6)
        r_cmd = Signal(8)
        r_status = Signal(8)
        # A reply never overlaps a request's reception: it reuses the request's length, byte
        # index and CRC registers (one CRC circuit, one "last byte" compare).
        r_len, r_idx, r_crc = length, idx, crc
        r_src = Signal(3)
        r_part = Signal(3)                      # 0 header, 1 payload, 2 crc lo, 3 crc hi
        r_sub = Signal(range(max(word_bytes, RESULT_BYTES, COUNTER_BYTES)))  # byte in a record
        r_count = Signal(8)                     # results in a RESULTS reply
        # A result's last byte sent (R_NEXT) pops it in the next cycle (R_GAP), from this
        # register: the pop is off the path of the byte's bookkeeping, and the next result
        # is at the buffer's output from R_GAP2 (R_SEL waits for it).
        pop_q = Signal()
        m.d.sync += pop_q.eq(0)
        m.d.comb += results.r_en.eq(pop_q)
        r_word = Signal(range(max(p.depth, len(COUNTER_NAMES)) + 1))   # weight word, counter
        tx_byte = Signal(8)
        tx_valid = Signal()
        m.d.comb += [tx.i.payload.eq(tx_byte), tx.i.valid.eq(tx_valid)]
        m.d.comb += core.rb_addr.eq(r_word)
        # The host write's address and word come straight from their registers, whatever the
        # state (only wr_en says when to write): chosen by the state in LW_WRITE, they were an
        # AND with the state's decode before 256 data bits spread over the core (the 85F's
        # critical path at 5932f18 with seed 2).
        m.d.comb += [core.wr_addr.eq(lw_addr), core.wr_data.eq(lw_word[:p.weight_word.size])]
        # The weight word is registered before its bytes are selected: a block RAM's output
        # is slow (about 5.6 ns on ECP5), too slow to go through a wide byte multiplexer too.
        # Reset-less, like the engines' registers of the same block RAM outputs, so that
        # Yosys merges them into one (forward.py).
        rb_q = Signal(p.weight_word.size, reset_less=True)
        m.d.sync += rb_q.eq(core.rb_data)
        rb_bytes = Cat(rb_q, C(0, 8 * word_bytes - p.weight_word.size))
        res = data.View(rlayout, results.r_data)
        res_bytes = Cat(zext(res.label, 8), zext(res.prediction, 8), zext(res.kind, 8),
                        zext(res.cycles, 24))
        assert len(res_bytes) == 8 * RESULT_BYTES
        header = Array([C(REPLY_SOF, 8), r_cmd, r_status, zext(r_len, 16)[:8],
                        zext(r_len, 16)[8:]])
        # The INFO bytes in a ROM (Yosys builds it in logic, smaller than a byte multiplexer),
        # read with the reply's byte index, which holds still from R_NEXT until the next R_PICK
        # (R_GAP, R_GAP2, R_SEL between).
        m.submodules.info_rom = info_rom = memory.Memory(shape=8, depth=len(info),
                                                         init=list(info))
        info_rd = info_rom.read_port()
        m.d.comb += info_rd.addr.eq(r_idx)
        error_before = Signal()                 # the error LED before this request
        status_word = Cat(Cat(core.idle, infer, error_before), C(0, 5), zext(schedule, 8),
                          zext(batch, 8), zext(threshold, 32), zext(results.level, 8),
                          zext(inflight, 8), last_error, bad_frames, junk, uart_errors)
        assert len(status_word) == 8 * STATUS_BYTES
        # The reply's byte is chosen in two registered stages. First, each source's byte is
        # selected next to the source, every cycle, into its own register; then R_PICK
        # chooses among those registers into ``tx_byte``. As one multiplexer from the byte
        # index to ``tx_byte`` it reached over the whole die: on the 85F it was the critical
        # path of ``paper-x4`` (18.6 ns, 16.1 of it routing, 1a2cf03) and of a ``paper-x2``
        # seed. The stage's inputs hold still from R_GAP (the index, the counter latched in
        # R_GAP2, the weight word from R_SEL on), so its registers are right in R_PICK.
        # A weight word wider than 8 bytes is cut to its byte in two steps: its 8-byte part
        # into ``rb_part`` (from R_SEL), then the byte (R_SEL2). As one 32-to-1 multiplexer
        # from the byte index it was among the 85F's paths over 10 ns (5932f18, 10.99 ns).
        rb_parts = (word_bytes + 7) // 8
        if rb_parts > 1:
            rb_part = Signal(64)
            m.d.sync += rb_part.eq(Cat(rb_bytes, C(0, 64 * rb_parts - len(rb_bytes)))
                                   .word_select(r_sub[3:], 64))
        src_bytes = {
            SRC_INFO: info_rd.data,
            SRC_STATUS: status_word.word_select(r_idx[:4], 8),
            SRC_COUNTERS: bank.rd_value.word_select(r_sub[:3], 8),
            SRC_LEVEL: results.level,
            SRC_RESULTS: Mux(r_idx == 0, r_count, res_bytes.word_select(r_sub[:3], 8)),
            SRC_WEIGHTS: rb_part.word_select(r_sub[:3], 8) if rb_parts > 1
            else rb_bytes.word_select(r_sub[:max(1, (word_bytes - 1).bit_length())], 8),
        }
        src_q = {src: Signal(8, name=f"src{src}_q") for src in src_bytes}
        header_q = Signal(8)
        m.d.sync += [src_q[src].eq(value) for src, value in src_bytes.items()]
        m.d.sync += header_q.eq(header[r_idx[:3]])
        pay_byte = Signal(8)
        with m.Switch(r_src):
            for src in src_q:
                with m.Case(src):
                    m.d.comb += pay_byte.eq(src_q[src])
        next_byte = Signal(8)
        with m.Switch(r_part):
            with m.Case(0):
                m.d.comb += next_byte.eq(header_q)
            with m.Case(1):
                m.d.comb += next_byte.eq(pay_byte)
            with m.Case(2):
                m.d.comb += next_byte.eq(r_crc[:8])
            with m.Case(3):
                m.d.comb += next_byte.eq(r_crc[8:])

        # A reply starts through these strobes, so that its bookkeeping exists once in the
        # logic, not once per place that replies. They are registered, and the reply's
        # registers are set from them in R_START, the cycle after: each place that replies
        # decides late in its cycle (the command's checks, the core taking a sample's last
        # word), and on the 85F that decision through the shared registers' choice of next
        # value was the link's critical path (``r_sub``, 11.46 ns at adba6c4).
        go = Signal()
        go_status = Signal(8)
        go_src = Signal(3)
        go_len = Signal(16)
        go_q = Signal()
        go_status_q = Signal(8)
        go_src_q = Signal(3)
        go_len_q = Signal(16)
        m.d.sync += [go_q.eq(go), go_status_q.eq(go_status), go_src_q.eq(go_src),
                     go_len_q.eq(go_len)]
        went = Signal()                         # a reply started in the previous cycle
        m.d.sync += went.eq(go_q)
        with m.If(go_q):
            m.d.sync += [r_cmd.eq(cmd), r_status.eq(go_status_q), r_src.eq(go_src_q),
                         r_len.eq(go_len_q), r_part.eq(0), r_idx.eq(0), r_sub.eq(0),
                         r_crc.eq(0xFFFF)]
        # The error bookkeeping follows from the registered status, a cycle later (the reply's
        # first byte leaves after R_GAP, R_GAP2, R_SEL and R_PICK, so STATUS never sees it stale).
        with m.If(went):
            # A refusal while busy is flow control, not an error: the frame itself was good.
            with m.If(r_status == Status.OK):
                m.d.sync += error.eq(0)
            with m.Elif(r_status != Status.BUSY):
                m.d.sync += [error.eq(1), last_error.eq(r_status),
                             bad_frames.eq(bad_frames + 1)]

        def reply(status, src=0, length=0):
            """Start a reply to ``cmd`` (statements for the current state)."""
            m.d.comb += [go.eq(1), go_status.eq(status), go_src.eq(src), go_len.eq(length)]
            m.next = "R_START"

        def fail(status):
            reply(status)

        # The reply's last payload byte, ``r_idx == r_len - 1``, registered: the index changes
        # only in R_NEXT, five states (R_GAP, R_GAP2, R_SEL, R_PICK, R_SEND) before R_NEXT tests it
        # again.
        # (On the iCE40 the subtraction and the compare, in the logic of r_idx's and r_part's
        # next values, were the critical path, 40.7 ns at 4d0b236.)
        r_at_end = Signal()
        m.d.sync += r_at_end.eq(r_idx == r_len - 1)

        # Payload lengths: exact, or (LOAD_WEIGHTS) a range.
        expected_len = {Cmd.INFO: 0, Cmd.STATUS: 0, Cmd.SET_SCHEDULE: 1, Cmd.SET_THRESHOLD: 4,
                        Cmd.SET_BATCH: 1, Cmd.SET_INFER: 1, Cmd.RESET: 0,
                        Cmd.UPLOAD: 2 + p.layers[0], Cmd.RESULTS: 1, Cmd.COUNTERS: 0,
                        Cmd.WEIGHTS: 4, Cmd.LOAD_WEIGHTS: (2 + K, max_payload)}
        m.d.comb += sb_r.addr.eq(beat)
        w_addr, w_count = arg[:16], arg[16:]

        def beyond(addr, count):
            """``addr + count > depth``: either is above ``depth``, or their sum, both taken
            at ``depth``'s width (a carry chain that short, not one of 17 bits)."""
            a = p.depth.bit_length()
            return (~below(addr, p.depth + 1) | ~below(count, p.depth + 1)
                    | (addr[:a] + count[:a] > p.depth))
        # Registered views of the result buffer for the decisions in EXEC (short paths). Both
        # are exact there: between the request's last byte and EXEC nothing uploads or pops,
        # and results that arrive meanwhile only raise the level.
        level_q = Signal.like(results.level)
        room = Signal()
        m.d.sync += [level_q.eq(results.level),
                     room.eq(inflight + results.level < self._result_depth)]
        # The weight commands' range checks, registered likewise: their operands (arg and the
        # LOAD_WEIGHTS counts) settle with the payload's last byte, two bytes before EXEC.
        w_bad, lw_bad = Signal(), Signal()
        m.d.sync += [
            w_bad.eq((w_count == 0) | ~below(w_count, max_words + 1) | beyond(w_addr, w_count)),
            # Whole words, then padding to a multiple of K bytes (shorter than K), all inside
            # the memory. (With the length of at least 2 + K, no whole word also means K or
            # more bytes after the last; the first term states the rule directly.)
            lw_bad.eq((lw_words == 0) | (lw_part >= K) | (kpos != 0)
                      | beyond(w_addr, lw_words)),
        ]
        n_results = Signal(8)
        m.d.comb += n_results.eq(Mux(arg[:8] < level_q, arg[:8], level_q))
        # The length and value checks of EXEC, registered too: the command and the length
        # settle by LEN1 and the payload with its last byte, both at least two bytes (CRC0,
        # CRC1) before EXEC. In EXEC they were one circuit with the reply's bookkeeping, among
        # the longest paths of the 85F's link. The core's idle test is registered as well: the
        # core cannot leave idle while the link is in EXEC (only an UPLOAD or a LOAD_WEIGHTS
        # gives it work), so ``idle_q`` says idle only when the core is.
        len_bad, val_bad, idle_q = Signal(), Signal(), Signal()
        m.d.sync += idle_q.eq(core.idle)
        value_ok = {
            Cmd.SET_SCHEDULE: below(arg, 3),
            Cmd.SET_THRESHOLD: below(arg, 1 << p.threshold_width),
            Cmd.SET_BATCH: (arg != 0) & below(arg, p.max_batch + 1),
            Cmd.SET_INFER: below(arg, 2),
            Cmd.UPLOAD: below(label, p.classes) & below(flags, 2),
        }
        with m.Switch(cmd):
            for code, n in expected_len.items():
                with m.Case(code):
                    if isinstance(n, tuple):
                        m.d.sync += len_bad.eq(below(length, n[0]) | ~below(length, n[1] + 1))
                    else:
                        m.d.sync += len_bad.eq(length != n)
                    m.d.sync += val_bad.eq(~value_ok[code] if code in value_ok else 0)

        # The command's index among the known ones (``len(codes)``: unknown), registered: the
        # command settles with its byte, four bytes before EXEC decides on it.
        codes = list(expected_len)
        cmd_idx = Signal(range(len(codes) + 1))
        with m.Switch(cmd):
            for i, code in enumerate(codes):
                with m.Case(code):
                    m.d.sync += cmd_idx.eq(i)
            with m.Default():
                m.d.sync += cmd_idx.eq(len(codes))
        # EXEC's verdict (see there).
        ACT_REPLY, ACT_STREAM, ACT_LOAD = range(3)
        v_status = Signal(8)
        v_ok = Signal()
        v_src = Signal(3)
        v_len = Signal(16)
        v_act = Signal(2)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += take.eq(1)
                with m.If(got):
                    with m.If(rx_byte == REQUEST_SOF):
                        m.d.sync += [crc.eq(0xFFFF), crc_bad.eq(0), cmd.eq(0)]
                        m.next = "CMD"
                    with m.Else():
                        m.d.sync += junk.eq(junk + 1)
            for state, nxt in (("CMD", "LEN0"), ("LEN0", "LEN1"), ("LEN1", None),
                               ("PAYLOAD", None), ("CRC0", "CRC1"), ("CRC1", None)):
                with m.State(state):
                    m.d.comb += take.eq(1)
                    with m.If(got):
                        if state in ("CMD", "LEN0", "LEN1", "PAYLOAD"):
                            m.d.sync += crc.eq(crc_next)
                        if state == "CMD":
                            m.d.sync += cmd.eq(rx_byte)
                        elif state == "LEN0":
                            m.d.sync += length.eq(rx_byte)
                        elif state == "LEN1":
                            m.d.sync += [length.eq(Cat(length[:8], rx_byte)), idx.eq(0),
                                         arg.eq(0),
                                         kpos.eq(0), wpos.eq(0), lw_words.eq(0),
                                         lw_part.eq(0)]
                            m.next = "LEN_CHECK"
                        elif state == "PAYLOAD":
                            m.d.sync += idx.eq(idx + 1)
                            with m.If(below(idx, 4)):
                                m.d.sync += arg.word_select(idx[:2], 8).eq(rx_byte)
                            with m.If(idx == 0):
                                m.d.sync += label.eq(rx_byte)
                            with m.If(idx == 1):
                                m.d.sync += flags.eq(rx_byte)
                            with m.If(~below(idx, 2) & (wpos < sbuf_rows)):
                                word = Cat(acc[8:], rx_byte)
                                m.d.sync += [acc.eq(word), kpos.eq(kpos + 1)]
                                with m.If(kpos == K - 1):
                                    m.d.sync += [kpos.eq(0), wpos.eq(wpos + 1)]
                                    m.d.comb += sb_w.en.eq(1)
                                # Weight words of a LOAD_WEIGHTS frame (counted for any).
                                m.d.sync += lw_part.eq(lw_part + 1)
                                with m.If(lw_part == word_bytes - 1):
                                    m.d.sync += [lw_part.eq(0), lw_words.eq(lw_words + 1)]
                            m.d.sync += pay_last.eq(idx == len_m2)
                            with m.If(pay_last):
                                m.next = "CRC0"
                        elif state == "CRC0":
                            m.d.sync += crc_bad.eq(rx_byte != crc[:8])
                        else:
                            m.d.sync += crc_bad_hi.eq(rx_byte != crc[8:])
                            m.next = "CRC_CHECK"
                        if nxt is not None:
                            m.next = nxt
                    with m.Elif(timed_out):
                        fail(Status.TIMEOUT)

            # The length's and the CRC's decisions, from registers, a cycle after their bytes
            # (as part of the byte's cycle, they made the receiving states' longest paths:
            # the FIFO's byte through a 16-bit compare into the next state).
            with m.State("LEN_CHECK"):
                m.d.sync += [pay_last.eq(length == 1), len_m2.eq(length - 2)]
                with m.If(~below(length, max_payload + 1)):
                    m.next = "DRAIN_LEN"
                with m.Elif(length == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("CRC_CHECK"):
                with m.If(crc_bad | crc_bad_hi):
                    m.next = "DRAIN_CRC"
                with m.Else():
                    m.next = "EXEC"

            # A corrupt frame: discard whatever follows until the line is quiet, then reply.
            for state, status in (("DRAIN_LEN", Status.BAD_LENGTH), ("DRAIN_CRC", Status.BAD_CRC)):
                with m.State(state):
                    m.d.comb += take.eq(1)
                    with m.If(timed_out):
                        fail(status)

            # A checked frame is acted on in two states. EXEC decides, from registers only (the
            # command's index and the registered checks), the reply's status, source and
            # length and what follows it (a reply, the stream of an UPLOAD, the writes of a
            # LOAD_WEIGHTS), into the verdict registers; ACT carries the verdict out. As one
            # state, the command's decoding and its checks went through the choice among the
            # states' replies in one path: on the 85F 8 logic levels, the longest of the link's.
            with m.State("EXEC"):
                m.d.sync += error_before.eq(error)
                m.next = "ACT"

                def verdict(status, src=0, length=0, act=ACT_REPLY):
                    m.d.sync += [v_status.eq(status), v_ok.eq(status == Status.OK),
                                 v_src.eq(src), v_len.eq(length), v_act.eq(act)]

                with m.Switch(cmd_idx):
                    for i, code in enumerate(codes):
                        with m.Case(i):
                            with m.If(len_bad):
                                verdict(Status.BAD_LENGTH)
                            with m.Else():
                                if code == Cmd.INFO:
                                    verdict(Status.OK, src=SRC_INFO, length=len(info))
                                elif code == Cmd.STATUS:
                                    verdict(Status.OK, src=SRC_STATUS, length=STATUS_BYTES)
                                elif code == Cmd.COUNTERS:
                                    verdict(Status.OK, src=SRC_COUNTERS,
                                            length=COUNTER_BYTES * len(COUNTER_NAMES))
                                elif code in (Cmd.SET_SCHEDULE, Cmd.SET_THRESHOLD,
                                              Cmd.SET_BATCH, Cmd.SET_INFER, Cmd.WEIGHTS,
                                              Cmd.LOAD_WEIGHTS):
                                    bad = {Cmd.WEIGHTS: w_bad,
                                           Cmd.LOAD_WEIGHTS: lw_bad}.get(code, val_bad)
                                    with m.If(bad):
                                        verdict(Status.BAD_VALUE)
                                    with m.Elif(~idle_q):
                                        verdict(Status.BUSY)
                                    with m.Else():
                                        if code == Cmd.WEIGHTS:
                                            verdict(Status.OK, src=SRC_WEIGHTS,
                                                    length=mul_const(w_count, word_bytes))
                                        elif code == Cmd.LOAD_WEIGHTS:
                                            verdict(Status.OK, act=ACT_LOAD)
                                        else:
                                            verdict(Status.OK)
                                elif code == Cmd.RESET:
                                    with m.If(~idle_q):
                                        verdict(Status.BUSY)
                                    with m.Else():
                                        verdict(Status.OK)
                                elif code == Cmd.UPLOAD:
                                    with m.If(val_bad):
                                        verdict(Status.BAD_VALUE)
                                    with m.Elif(~room):
                                        verdict(Status.BUSY)
                                    with m.Else():
                                        verdict(Status.OK, act=ACT_STREAM)
                                elif code == Cmd.RESULTS:
                                    # The count is taken here, with the length it makes: the
                                    # level may rise before ACT.
                                    m.d.sync += r_count.eq(n_results)
                                    verdict(Status.OK, src=SRC_RESULTS,
                                            length=1 + mul_const(n_results, RESULT_BYTES))
                    with m.Default():
                        verdict(Status.UNKNOWN_COMMAND)

            with m.State("ACT"):
                # The command's effect, where the verdict is OK.
                with m.If(v_ok):
                    with m.Switch(cmd_idx):
                        for i, code in enumerate(codes):
                            with m.Case(i):
                                if code in (Cmd.SET_SCHEDULE, Cmd.SET_THRESHOLD, Cmd.SET_BATCH,
                                            Cmd.SET_INFER):
                                    reg = {Cmd.SET_SCHEDULE: schedule,
                                           Cmd.SET_THRESHOLD: threshold,
                                           Cmd.SET_BATCH: batch, Cmd.SET_INFER: infer}[code]
                                    m.d.sync += reg.eq(arg)
                                elif code == Cmd.RESET:
                                    m.d.comb += rst_req.eq(1)      # the counter bank too
                                elif code == Cmd.COUNTERS:
                                    m.d.sync += r_word.eq(0)
                                elif code == Cmd.WEIGHTS:
                                    m.d.sync += r_word.eq(w_addr)
                with m.Switch(v_act):
                    with m.Case(ACT_REPLY):
                        reply(v_status, src=v_src, length=v_len)
                    with m.Case(ACT_STREAM):
                        m.d.comb += inflight_inc.eq(1)
                        m.d.sync += beat.eq(0)
                        m.next = "STREAM_READ"
                    with m.Case(ACT_LOAD):
                        m.d.sync += [lw_addr.eq(w_addr), lw_left.eq(lw_words),
                                     beat.eq(0), kpos.eq(0), lw_b.eq(0)]
                        m.next = "LW_READ"

            with m.State("STREAM_READ"):
                # The sample buffer's read port has latency 1: the word of ``beat`` is there
                # in STREAM_LATCH, which registers it for STREAM_SEND. The block RAM's output
                # (5.8 ns from the clock in nextpnr's ECP5 model) went into the core's input
                # logic without it: the 85F's critical path at 5d889db with seed 3, 11.69 ns.
                m.next = "STREAM_LATCH"
            with m.State("STREAM_LATCH"):
                m.d.sync += s_pixels.eq(sb_r.data)
                m.next = "STREAM_SEND"
            with m.State("STREAM_SEND"):
                m.d.comb += [core.i.valid.eq(1), core.i.payload.pixels.eq(s_pixels),
                             core.i.payload.label.eq(label[:4]),
                             core.i.payload.last.eq(flags[0])]
                if p.skip_zeros:
                    # Every word is streamed (the core stores the nonzero ones).
                    m.d.comb += [core.i.payload.row.eq(beat),
                                 core.i.payload.end.eq(beat == rows0 - 1)]
                with m.If(core.i.ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == rows0 - 1):
                        m.d.sync += beat.eq(0)
                        reply(Status.OK, src=SRC_LEVEL, length=1)
                    with m.Else():
                        m.next = "STREAM_READ"

            # LOAD_WEIGHTS after its checks: the data bytes back from the sample buffer, one
            # a cycle, into ``lw_word``; each complete word to the core's host write port. The
            # core stays idle meanwhile: no other frame is taken until the reply.
            with m.State("LW_READ"):
                # The sample buffer's read port has latency 1: row ``beat`` is there in LW_BYTE.
                m.next = "LW_BYTE"
            with m.State("LW_BYTE"):
                row = Value.cast(sb_r.data)
                m.d.sync += [lw_word.eq(Cat(lw_word[8:], row.word_select(kpos, 8) if K > 1
                                            else row)),
                             kpos.eq(kpos + 1), lw_b.eq(lw_b + 1)]
                with m.If(kpos == K - 1):
                    m.d.sync += [kpos.eq(0), beat.eq(beat + 1)]
                with m.If(lw_b == word_bytes - 1):
                    m.d.sync += lw_b.eq(0)
                    m.next = "LW_WRITE"
                with m.Elif(kpos == K - 1):
                    m.next = "LW_READ"
            with m.State("LW_WRITE"):
                m.d.comb += core.wr_en.eq(1)
                m.d.sync += [lw_addr.eq(lw_addr + 1), lw_left.eq(lw_left - 1)]
                with m.If(lw_left == 1):
                    reply(Status.OK)
                with m.Else():
                    m.next = "LW_READ"

            # Reply, one byte at a time (R_START first sets the reply's registers from the
            # registered strobes). R_GAP and R_GAP2 let a new weight address reach the
            # memory (R_GAP) and its word reach ``rb_q`` (R_GAP2), and latch a counter; R_SEL
            # and R_SEL2 let the sources' bytes reach their registers (``src_q``, a weight byte
            # through ``rb_part``); R_PICK registers the
            # byte; R_SEND hands it to the UART; R_NEXT adds it to the CRC and moves on.
            with m.State("R_START"):
                m.next = "R_GAP"
            with m.State("R_GAP"):
                m.next = "R_GAP2"
            with m.State("R_GAP2"):
                # A counter is read whole before its first byte (no carry tearing): wait for
                # the bank's value of counter ``r_word``, which it holds until the next read.
                m.d.comb += bank.rd_index.eq(r_word)
                with m.If((r_src == SRC_COUNTERS) & (r_sub == 0)):
                    m.d.comb += bank.rd_req.eq(1)
                    with m.If(bank.rd_valid):
                        m.next = "R_SEL"
                with m.Else():
                    m.next = "R_SEL"
            with m.State("R_SEL"):
                # After a pop, the result buffer's next entry takes a cycle or two to appear;
                # the cycle it is there, its byte goes into its register.
                with m.If(~((r_part == 1) & (r_src == SRC_RESULTS) & (r_idx != 0)
                            & ~results.r_rdy)):
                    m.next = "R_SEL2"
            with m.State("R_SEL2"):
                # A weight byte's part is in ``rb_part`` now, the byte in its register next.
                m.next = "R_PICK"
            with m.State("R_PICK"):
                m.d.sync += [tx_byte.eq(next_byte), tx_valid.eq(1)]
                m.next = "R_SEND"
            with m.State("R_SEND"):
                with m.If(tx.i.ready):
                    m.d.sync += tx_valid.eq(0)
                    m.next = "R_NEXT"
            with m.State("R_NEXT"):
                # The byte's bookkeeping, the cycle after the UART took it: in R_SEND it was one
                # circuit with the UART's ready, a path into the shared registers too.
                m.d.sync += r_idx.eq(r_idx + 1)
                m.d.comb += crc_byte.eq(tx_byte)
                with m.If((r_part == 1) | ((r_part == 0) & (r_idx != 0))):
                    m.d.sync += r_crc.eq(crc_next)
                m.next = "R_GAP"
                with m.Switch(r_part):
                    with m.Case(0):
                        with m.If(r_idx == 4):
                            m.d.sync += [r_idx.eq(0), r_part.eq(Mux(r_len == 0, 2, 1))]
                    with m.Case(1):
                        m.d.sync += r_sub.eq(r_sub + 1)
                        with m.If((r_src == SRC_RESULTS) & (r_idx != 0)
                                  & (r_sub == RESULT_BYTES - 1)):
                            m.d.sync += [r_sub.eq(0), pop_q.eq(1)]
                        with m.If((r_src == SRC_RESULTS) & (r_idx == 0)):
                            m.d.sync += r_sub.eq(0)
                        with m.If((r_src == SRC_WEIGHTS) & (r_sub == word_bytes - 1)):
                            m.d.sync += [r_sub.eq(0), r_word.eq(r_word + 1)]
                        with m.If((r_src == SRC_COUNTERS) & (r_sub == COUNTER_BYTES - 1)):
                            m.d.sync += [r_sub.eq(0), r_word.eq(r_word + 1)]
                        with m.If(r_at_end):
                            m.d.sync += [r_idx.eq(0), r_part.eq(2)]
                    with m.Case(2):
                        m.d.sync += r_part.eq(3)
                    with m.Case(3):
                        m.next = "IDLE"

        m.d.comb += [self.led_idle.eq(core.idle), self.led_error.eq(error)]
        hold = Signal(range(self._led_hold + 1))
        with m.If(~core.idle):
            m.d.sync += hold.eq(self._led_hold)
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        m.d.comb += self.led_busy.eq(hold != 0)

        return m


def uart_divisor(freq, baud):
    """Clock cycles per UART bit for ``baud`` from a ``freq`` Hz clock: the ratio, rounded.

    Raises ValueError (one line) if that is under 4 cycles or the rate it makes is more than
    2 % from ``baud`` (the receiver samples mid-bit: it tolerates a few percent, ±3 % tested).
    """
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor = round(freq / baud)
    if divisor < 4 or abs(freq / divisor - baud) > 0.02 * baud:
        raise ValueError(f"{baud} baud cannot be made from a {freq / 1e6:g} MHz clock "
                         f"(at least 4 cycles a bit, within 2 %)")
    return divisor


def link_timeout(freq, divisor):
    """:class:`BoardTop`'s ``timeout`` on a board: 1024 byte times of the line or of 115,200
    baud, whichever is longer (88.9 ms). A USB-serial adapter's gaps inside a frame last
    milliseconds whatever the baud rate, so a faster line keeps the time, not the byte count
    (at 115,200 baud this is :class:`BoardTop`'s default)."""
    return 1024 * 10 * max(divisor, round(freq / 115200))


class PlatformTop(Elaboratable):
    """:class:`BoardTop` on an amaranth-boards platform: its first UART and its first LEDs.

    Parameters
    ----------
    params : CoreParams
    baud : int
        UART baud rate; the divisor is the clock frequency over it, rounded (the resulting
        rate must be within 2 % of ``baud``).
    clk_frequency : float, optional
        Frequency of the ``sync`` domain in Hz. Default: the platform's default clock (or the
        PLL's output, with ``pll``).
    pll : dict, optional
        Make the ``sync`` domain with the part's PLL (:func:`specbp_hw.synth_top.pll_config`
        of the board's oscillator): what the bitstreams of ``python -m specbp_hw.build`` do.
        Default: the platform's default clock domain.
    leds : tuple of str
        The :class:`BoardTop` LED outputs on the board's ``led`` resources 0, 1, 2, ... as far
        as the board has them. The default puts the error on LED 0 (red on the iCEBreaker)
        and activity on LED 1 (green).
    **kwargs
        Passed to :class:`BoardTop` (``init``, ``timeout``, ``result_depth``, ``led_hold``).
        The default ``timeout`` here is :func:`link_timeout`: about 89 ms at any baud rate.

    Members
    -------
    board : BoardTop or None
        The board top, once elaborated.

    Raises ValueError (one line) at elaboration if the platform has no UART or the baud rate
    cannot be reached.
    """

    LED_NAMES = ("led_idle", "led_busy", "led_error")

    def __init__(self, params, *, baud=115200, clk_frequency=None, pll=None,
                 leds=("led_error", "led_busy", "led_idle"), **kwargs):
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        if not all(name in self.LED_NAMES for name in leds):
            raise ValueError(f"leds must name outputs among {', '.join(self.LED_NAMES)}, "
                             f"not {leds!r}")
        self._leds = tuple(leds)
        self._params = params
        self._baud = baud
        self._clk = pll["f_out"] if pll is not None else clk_frequency
        self._pll = pll
        self._kwargs = kwargs
        self.board = None

    def elaborate(self, platform):
        from amaranth.build import ResourceError
        freq = self._clk or platform.default_clk_frequency
        divisor = uart_divisor(freq, self._baud)
        kwargs = dict(self._kwargs)
        kwargs.setdefault("timeout", link_timeout(freq, divisor))
        try:
            uart = platform.request("uart", 0, dir="-")
        except ResourceError:
            raise ValueError(f"{type(platform).__name__} has no 'uart' resource; the host link "
                             f"needs a UART (a USB-serial bridge to the FPGA's pins)") from None
        m = Module()
        if self._pll is not None:
            from .synth_top import add_pll_clock
            add_pll_clock(m, platform, self._pll)
        m.submodules.board = top = self.board = BoardTop(self._params, divisor, **kwargs)
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.uart_rx.eq(rx.i), tx.o.eq(top.uart_tx)]
        for i, name in enumerate(self._leds):
            try:
                led = platform.request("led", i, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(getattr(top, name))
        return m
