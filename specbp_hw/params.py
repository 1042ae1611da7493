"""Parameters and memory geometry of the training core.

The core computes ``lanes`` neurons side by side and consumes ``inputs`` (K) inputs per cycle,
so each engine has ``K x N`` multipliers. Weights of layer ``l`` are stored in blocks of
``K x N``: the word at ``base + r * cols + c`` holds ``W[r*K + k][c*N + n]`` in element
``k * N + n``. After the ``rows`` weight rows of a layer comes one bias row (element ``n`` of
word ``c`` is ``b[c*N + n]``, the other elements stay zero). The gradient accumulators use the
same layout.
"""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Array, Const, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data

from golden.fixed import FixedFormat

__all__ = ["CoreParams", "LANE_GROUP", "SCHEDULES", "SERIAL", "SPECULATIVE", "PIPELINED",
           "addr_width", "lookahead", "next_loader", "NO_RW_CHECK", "sync_read"]

SERIAL, SPECULATIVE, PIPELINED = 0, 1, 2
SCHEDULES = {"serial": SERIAL, "speculative": SPECULATIVE, "pipelined": PIPELINED}


def addr_width(depth):
    """Address bits of a memory with ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def lookahead(m, reg):
    """The value the register ``reg`` loads at the next clock edge, as a combinational signal.

    Assign the returned signal (``m.d.comb``) instead of ``reg``: it holds ``reg`` unless
    assigned, and ``reg`` loads it at every edge. A synchronous read port addressed with it
    delivers the word at ``reg``'s address in the cycle ``reg`` holds that address, one cycle
    earlier than a port addressed with ``reg`` itself, so the word can be registered before it
    is used without a cycle more.
    """
    nxt = Signal.like(reg, name=f"{reg.name}_next")
    m.d.comb += nxt.eq(reg)
    m.d.sync += reg.eq(nxt)
    return nxt


def read_ahead(m, params, rd, pix, ptr, row_like):
    """The read-ahead of a ``skip_zeros`` engine over stored words (:attr:`CoreParams.x_word`).

    At the issue of word j, ``pix`` holds word j's pixels, the returned ``xq1`` word j + 1, the
    read port ``rd`` gives word j + 2 and the counter ``ptr`` (its address) is at j + 3.
    ``more1``: word j + 1 exists; ``rem``: the words after j; ``nxt``: the next issue's row
    (``xq1``'s, or the bias row ``rows(0)`` after the last word). ``advance()`` returns the
    statements that move to word j + 1. Returns ``(xq1, rem, more1, nxt, advance)``.
    """
    rows0 = params.rows(0)
    xq1 = Signal(params.x_word)
    rem = Signal(range(rows0 + 1))
    more1 = Signal()
    nxt = Signal.like(row_like)
    m.d.comb += nxt.eq(Mux(more1, xq1.row, rows0))

    def advance():
        return [pix.eq(xq1.pix), xq1.eq(rd.data), ptr.eq(ptr + 1),
                rem.eq(Mux(rem == 0, 0, rem - 1)), more1.eq(rem > 1)]
    return xq1, rem, more1, nxt, advance


# Lanes the backward engine sums together in the first of its two delta-phase summing stages
# (CoreParams.delta_sum_stages).
LANE_GROUP = 4


# Memory attributes: a read of a word written in the same cycle is undefined (see sync_read).
NO_RW_CHECK = {"no_rw_check": 1}


def sync_read(m, mem, name, *, poison_from=None):
    """A read port of ``mem`` (created with ``attrs=NO_RW_CHECK``) with latency 1: an
    asynchronous read and a register after it, which Yosys merges into the RAM's read port.

    Unlike a synchronous Amaranth read port, which promises the old word when the word is
    written in the same cycle (Yosys then builds a bypass around a block RAM: registers on the
    write data, address and read data, and a choice), this and ``no_rw_check`` leave that case
    undefined in hardware: use it where such a read's value is never used. With
    ``poison_from`` (a write port of ``mem``; for tests) the register takes the inverted word
    then, so that a bit-exact run shows the value is not used. Returns an object with ``addr``,
    ``data`` and ``collision`` (the poisoning condition, or None).
    """
    port = mem.read_port(domain="comb")
    data = Signal(port.data.shape(), name=f"{name}_data")
    word = Value.cast(port.data)
    collision = None
    if poison_from is not None:
        wr = poison_from
        collision = Signal(name=f"{name}_collision")
        m.d.comb += collision.eq(wr.en.any() & (wr.addr == port.addr))
        word = Mux(collision, ~word, word)
    m.d.sync += Value.cast(data).eq(word)
    return SimpleNamespace(addr=port.addr, data=data, collision=collision)


def next_loader(m, *pairs):
    """A ``load(reg, value)`` for :meth:`CoreParams.sweep` in an engine with lookahead counters:
    for each ``(reg, nxt)`` of ``pairs`` (``nxt`` from :func:`lookahead`) it assigns ``nxt``;
    any other register loads ``value`` at the edge."""
    def load(reg, value):
        for r, nxt in pairs:
            if r is reg:
                m.d.comb += nxt.eq(value)
                return
        m.d.sync += reg.eq(value)
    return load


@dataclass(frozen=True)
class CoreParams:
    """Everything that fixes the hardware of one training core.

    Parameters
    ----------
    layers : tuple of int
        Layer sizes, input first. ``inputs`` must divide every layer's input size and
        ``lanes`` every hidden layer's size; the output layer is padded to a multiple of lanes.
    lanes : int
        Neurons computed side by side (N).
    inputs : int
        Inputs consumed per cycle (K).
    fmt : golden.fixed.FixedFormat
        The arithmetic (nearest rounding only in gateware).
    max_batch : int
        Largest batch size register value; sizes the gradient accumulators.
    lr : float
        Learning rate, a synthesis-time constant.
    clip : float
        Gradient clip, a synthesis-time constant.
    softmax_ways : int
        Classes per cycle in the softmax's exponential and scaling stages (1: sequential, few
        multipliers; ``classes``: fully parallel, lowest latency).
    softmax_div_bits : int
        Quotient bits per cycle of the softmax's reciprocal divider.
    skip_zeros : bool
        Skip the first layer's all-zero input words: the loader stores only the words of a
        sample with a nonzero pixel, each with its row number, and both engines walk only
        those in the first layer (the zero words add nothing to a sum or a gradient, so the
        results are the same bits). The cycles of a pass then depend on the sample
        (:class:`specbp_hw.cycles.CycleModel`). Needs one column block in the first layer
        (``lanes >= layers[1]``); the last backward pass of a batch is then not fused with the
        update (a fused pass visits every word), so every batch ends with an update sweep.
    fmax_stages : bool
        Register stages for a faster clock, each a cycle: the forward and backward engines
        address the weights (and the forward engine the input buffer) with their issue
        counters' registers rather than their next values, and register the words in a stage
        of their own (one cycle more per forward layer and per delta layer); the backward
        engine registers each delta before writing it (one more per delta layer); the softmax
        registers its exponential table's word before the shift (one more); the update engine
        registers its start and its new weights before their write (two more per update
        sweep). At no cycle the backward engine registers its accumulator writes. The same
        results; the cycle model counts the stages.
    """

    layers: tuple = (784, 16, 16, 10)
    lanes: int = 16
    inputs: int = 1
    fmt: FixedFormat = FixedFormat(max_batch=16)
    max_batch: int = 16
    lr: float = 0.01
    clip: float = 5.0
    softmax_ways: int = 1
    softmax_div_bits: int = 1
    skip_zeros: bool = False
    fmax_stages: bool = False

    def __post_init__(self):
        layers = tuple(self.layers)
        if len(layers) < 3 or not all(isinstance(n, (int, np.integer)) and n > 0
                                      for n in layers):
            raise ValueError(f"The core needs at least one hidden layer: layer sizes must be "
                             f"three or more positive integers, not {self.layers!r}")
        object.__setattr__(self, "layers", tuple(int(n) for n in layers))
        for name in ("lanes", "inputs", "max_batch"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(self.fmt, FixedFormat):
            raise TypeError(f"fmt must be a golden.fixed.FixedFormat, not {self.fmt!r}")
        if self.fmt.rounding != "nearest":
            raise ValueError("The gateware implements nearest rounding only; stochastic "
                             "rounding exists in the model (golden) but not yet in hardware")
        if self.fmt.max_batch < self.max_batch:
            raise ValueError(f"fmt.max_batch ({self.fmt.max_batch}) must be at least the "
                             f"core's max_batch ({self.max_batch})")
        for l, n_in in enumerate(layers[:-1]):
            if n_in % self.inputs:
                raise ValueError(f"inputs per cycle ({self.inputs}) must divide every layer's "
                                 f"input size; layer {l} has {n_in}")
        for l, n_out in enumerate(layers[1:-1]):
            if n_out % self.lanes:
                raise ValueError(f"lanes ({self.lanes}) must divide every hidden layer's size; "
                                 f"hidden layer {l} has {n_out}")
        if layers[-1] > 16 or layers[-1] < 2:
            raise ValueError(f"The output layer must have 2 to 16 classes, not {layers[-1]}")
        if self.fmt.prob_frac >= self.fmt.act.width:
            raise ValueError("prob_frac must be below the activation width (y is stashed in "
                             "activation words)")
        self.fmt.lr_int(self.lr)
        if self.skip_zeros and self.cols(0) != 1:
            raise ValueError(f"skip_zeros needs the first hidden layer in one column block: "
                             f"lanes ({self.lanes}) must be at least layers[1] "
                             f"({layers[1]})")
        from .softmax import softmax_latency
        for name in ("skip_zeros", "fmax_stages"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, not {getattr(self, name)!r}")
        softmax_latency(self.fmt, layers[-1], ways=self.softmax_ways,
                        div_bits=self.softmax_div_bits)   # validates both

    # -- geometry ----------------------------------------------------------------------------

    @property
    def n_layers(self):
        """Weight layers."""
        return len(self.layers) - 1

    @property
    def classes(self):
        return self.layers[-1]

    @property
    def slots(self):
        """Stash slots: one per label, one for the sample in the forward engine, one loading."""
        return self.classes + 2

    def rows(self, l):
        """Weight rows (blocks of K inputs) of layer ``l``, the bias row excluded."""
        return self.layers[l] // self.inputs

    def cols(self, l):
        """Column blocks (of N neurons) of layer ``l``."""
        return -(-self.layers[l + 1] // self.lanes)

    def words(self, l):
        """Memory words of layer ``l``: weight rows plus the bias row, times column blocks."""
        return (self.rows(l) + 1) * self.cols(l)

    def base(self, l):
        """First word of layer ``l`` in the weight and accumulator memories."""
        return sum(self.words(i) for i in range(l))

    @property
    def depth(self):
        return self.base(self.n_layers)

    def act_words(self, l):
        """Words (of N values) of the stashed output of layer ``l`` (the last: y)."""
        return self.cols(l)

    def act_base(self, l):
        return sum(self.act_words(i) for i in range(l))

    @property
    def delta_sum_stages(self):
        """Pipeline stages of the backward engine's sum over the lanes in the delta phase: two
        (groups of ``LANE_GROUP`` lanes, then the groups into the accumulator) with more than
        ``LANE_GROUP`` lanes, one (every lane and the accumulator) otherwise."""
        return 2 if self.lanes > LANE_GROUP else 1

    @property
    def act_words_per_slot(self):
        return self.act_base(self.n_layers)

    @property
    def block(self):
        """Elements per memory word: K x N."""
        return self.inputs * self.lanes

    def grad_frac(self, l):
        return self.fmt.grad_frac(l, self.n_layers)

    def grad_width(self, l):
        f = FixedFormat.replace(self.fmt, max_batch=self.max_batch)
        return max(f.grad_width(l, self.n_layers), f.grad_width(l, self.n_layers, bias=True))

    @property
    def input_width(self):
        """Width of a multiplier's input operand: pixels (0..256) or activations."""
        return max(self.fmt.act.width, 10)

    @property
    def grad_word_width(self):
        """Width of one accumulator element: the widest layer's worst case."""
        return max(self.grad_width(l) for l in range(self.n_layers))

    # -- memory word shapes --------------------------------------------------------------------

    @property
    def weight_word(self):
        return data.ArrayLayout(signed(self.fmt.weight.width), self.block)

    @property
    def grad_word(self):
        return data.ArrayLayout(signed(self.grad_word_width), self.block)

    @property
    def pixel_word(self):
        """A word of the input stream: K uint8 pixels."""
        return data.ArrayLayout(unsigned(8), self.inputs)

    @property
    def value_word(self):
        """A word of the input buffer and the stash pixels: K pixels as u0.8 values
        (``p + (p >> 7)``, 0..256: 9 bits), converted as a sample is loaded, so that no
        engine has an adder behind these memories' outputs."""
        return data.ArrayLayout(unsigned(9), self.inputs)

    @property
    def x_word(self):
        """A stored word of the input buffer and the stash pixels: :attr:`value_word`, and with
        :attr:`skip_zeros` the word's row number beside it (``pix``, ``row``): the words of a
        sample with a nonzero pixel are stored one after the other."""
        if not self.skip_zeros:
            return self.value_word
        return data.StructLayout({"pix": self.value_word,
                                  "row": unsigned(self.rows(0).bit_length())})

    @property
    def xbuf_depth(self):
        """Words of the input buffer: two samples of ``rows(0)`` words, and one more, so that
        the forward engine reads half ``h``'s bias row at ``h * rows(0) + rows(0)`` (its data
        is not used) and its read address needs no compare."""
        if self.skip_zeros:
            # The forward engine reads up to three words ahead of its last (unused data).
            return 2 * self.rows(0) + 3
        return 2 * self.rows(0) + 1

    @property
    def stash_x_depth(self):
        """Words of the stash pixels: ``rows(0)`` per slot and three more. The backward engine
        reads two words ahead of its gradient sweep and stops at the bias row, so it reads up
        to three words past a slot's last (their data is not used); its read address needs no
        compare with the slot's end."""
        return self.slots * self.rows(0) + 3

    @property
    def act_word(self):
        return data.ArrayLayout(signed(self.fmt.act.width), self.lanes)

    @property
    def threshold_width(self):
        return (2 * self.classes << self.fmt.prob_frac).bit_length() + 1

    # -- gateware helpers ----------------------------------------------------------------------

    def slot_bases(self, words):
        """``slot * words`` for each stash slot, a table to index with a slot number: the first
        word of a slot in a memory of ``words`` words per slot. A few LUTs, where the product
        would take a DSP block and its delay."""
        return Array(Const(s * words) for s in range(self.slots))

    def sweep(self, m, layer, row, col, addr, issuing, load=None, bias=None, inc=None):
        """Advance a linear walk over every weight/accumulator word by one word per cycle.

        Words are visited in memory order: layer by layer, rows (the bias row last) and column
        blocks inside. ``issuing`` falls after the last word. Shared by the backward engine's
        gradient sweep and the update engine. ``load(reg, value)`` loads a counter (default:
        ``m.d.sync += reg.eq(value)``; an engine that reads memory through :func:`lookahead`
        assigns the counter's next value instead). ``bias``: a register that holds whether
        ``row`` is its layer's bias row, loaded here with ``row`` (instead of a compare of
        ``row`` in the walk's decision). ``inc``: a register that holds ``addr + 1``, loaded
        in its place (no adder between the counter and its next value).
        """
        if load is None:
            def load(reg, value):
                m.d.sync += reg.eq(value)
        rows = Array(Const(self.rows(l)) for l in range(self.n_layers))
        cols = Array(Const(self.cols(l)) for l in range(self.n_layers))
        load(addr, addr + 1 if inc is None else inc)
        with m.If(col == cols[layer] - 1):
            load(col, 0)
            with m.If(row == rows[layer] if bias is None else bias):
                load(row, 0)
                if bias is not None:
                    load(bias, 0)
                with m.If(layer == self.n_layers - 1):
                    load(issuing, 0)
                with m.Else():
                    load(layer, layer + 1)
            with m.Else():
                load(row, row + 1)
                if bias is not None:
                    load(bias, row == rows[layer] - 1)
        with m.Else():
            load(col, col + 1)

    # -- conversions between the golden model's arrays and memory words -----------------------

    def _positions(self):
        """Every stored parameter as ``(word, element, layer, i, j)``: weight ``W_l[i][j]``, or
        bias ``b_l[j]`` when ``i`` is None. Padding elements are not listed."""
        K, N = self.inputs, self.lanes
        for l in range(self.n_layers):
            n_out = self.layers[l + 1]
            for r in range(self.rows(l) + 1):
                for c in range(self.cols(l)):
                    word = self.base(l) + r * self.cols(l) + c
                    for n in range(min(N, n_out - c * N)):
                        if r < self.rows(l):
                            for k in range(K):
                                yield word, k * N + n, l, r * K + k, c * N + n
                        else:
                            yield word, n, l, None, c * N + n

    def pack_params(self, params):
        """Golden ``[(W, b), ...]`` (int arrays) to a list of per-word element lists."""
        words = [[0] * self.block for _ in range(self.depth)]
        for word, e, l, i, j in self._positions():
            w, b = params[l]
            words[word][e] = int(b[j] if i is None else w[i, j])
        return words

    def unpack_params(self, words):
        """Inverse of :meth:`pack_params`: per-word element lists to ``[(W, b), ...]``."""
        params = [(np.zeros((a, b), np.int64), np.zeros(b, np.int64))
                  for a, b in zip(self.layers[:-1], self.layers[1:])]
        for word, e, l, i, j in self._positions():
            w, b = params[l]
            if i is None:
                b[j] = words[word][e]
            else:
                w[i, j] = words[word][e]
        return params
