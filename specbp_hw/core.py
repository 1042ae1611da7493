"""The training core: engines, memories, per-label stash, controller and schedules.

Speculative backpropagation (arXiv 2511.11640, after Park & Suh, IEEE Access 8, 2020) as
specified in ``shared/docs/ALGORITHM.md``, with the arithmetic of ``docs/FIXED_POINT.md``.

Memories and their ports (each memory has one owner, this module; a read gives its word a
cycle later, see :func:`specbp_hw.params.sync_read`; a read of a word written in the same cycle is left undefined,
as no engine ever uses such a read's value, which the tests check by poisoning it):

========================  ==========================  ===========================================
memory                    port A                      port B
========================  ==========================  ===========================================
weights + biases          read: forward engine;       read: backward engine (training);
                          update (batch boundary);    write: update (batch boundary), host
                          host readback (idle)        write (idle). Port B's read and write
                                                      share one address (one read/write
                                                      block-RAM port)
gradient accumulators     read: backward engine;      write: backward engine; update (clears)
                          update
input buffer (2 halves)   write: loader               read: forward engine
stash pixels (per slot)   write: loader               read: backward engine
stash activations + y     write: forward engine       read: backward engine
========================  ==========================  ===========================================

The forward and backward engines address the weights, the input buffer and the accumulators
with their issue counters' registers, and the stash pixels (and, when skipping zero words, the
input buffer) with counters of their own, read ahead; the update engine addresses the
accumulators with its counter's next value (:func:`specbp_hw.params.lookahead`). Every engine
registers each word before the logic that uses it, so no block RAM output drives a multiplier
or a compare directly, and no logic drives the engines' weight addresses: a word read with a
register arrives a cycle after its issue, and the engines give it a stage of its own (one
cycle more per layer, in the cycle model).
The input buffer and the stash pixels hold u0.8 values (:attr:`CoreParams.value_word`): the
loader converts each pixel as it writes it, so the engines use the words as they are read.

Skipping zero words (``CoreParams.skip_zeros``). The loader stores only a sample's words with a
nonzero pixel, one after the other with their rows, and counts them per input-buffer half and
per stash slot; the engines' first layer walks those words and the bias row. A zero input adds
nothing to a neuron's sum or to its row's gradients, so the results are the same bits in fewer
cycles. The last backward pass of a batch is then never fused with the update (a fused sweep
writes every weight word): every batch ends with an update sweep.

Stash slots. There are ``classes + 2`` slots: one per label (its latest sample), one for the
sample in the forward engine and one being loaded. A label-to-slot table names each label's
slot. A step writes its own slot while the speculative pass reads the label's old slot, so
there is no hazard and no stall; at the end of the step the table points the label to the new
slot and the old slot is freed for loading.

Schedules (``schedule`` register): ``serial`` (forward, then backward), ``speculative`` (forward
alongside a backward over the label's stash; accept if ``sum |y_stash - y| <= threshold``, else
undo the speculative gradients exactly and run the normal backward), ``pipelined`` (forward of
sample i alongside the backward of sample i-1, drained at each batch boundary).
"""

from amaranth.hdl import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .arith import pixel_value, tree_sum
from .backward import BackwardEngine
from .cycles import CycleModel
from .forward import ForwardEngine
from .params import NO_RW_CHECK, PIPELINED, SPECULATIVE, CoreParams, addr_width, sync_read
from .update import UpdateEngine

__all__ = ["TrainingCore", "sample_layout", "sample_beats", "NOT_ATTEMPTED", "ACCEPTED", "REJECTED", "INFERENCE"]

# Step kinds in the result stream (the first three as in golden.train).
NOT_ATTEMPTED, ACCEPTED, REJECTED, INFERENCE = 0, 1, 2, 3

COUNTER_WIDTH = 48


def sample_layout(params):
    """One input beat: K pixels; ``label`` and ``last`` are taken from a sample's last beat.

    ``last`` marks the end of an epoch: the batch closes after that sample. A sample is
    ``rows(0)`` beats, row by row; with ``skip_zeros`` it is the beats of its rows with a
    nonzero pixel (others may be sent too: they are not stored), in row order, each with its
    ``row``, the last marked ``end`` (:func:`sample_beats`).
    """
    fields = {
        "pixels": data.ArrayLayout(unsigned(8), params.inputs),
        "label": unsigned(4),
        "last": unsigned(1),
    }
    if params.skip_zeros:
        fields.update(row=unsigned(params.rows(0).bit_length()), end=unsigned(1))
    return data.StructLayout(fields)


def sample_beats(params, image):
    """The ``(row, pixels, end)`` beats of one image (``layers[0]`` uint8 pixels): every row,
    or with ``skip_zeros`` the rows with a nonzero pixel (one zero beat, row 0, for an image
    without any)."""
    K = params.inputs
    words = [(r, [int(v) for v in image[r * K:(r + 1) * K]]) for r in range(params.rows(0))]
    if params.skip_zeros:
        words = [(r, px) for r, px in words if any(px)] or [(0, [0] * K)]
    return [(r, px, int(i == len(words) - 1)) for i, (r, px) in enumerate(words)]


def result_layout(params):
    """One result per sample: label, prediction, step kind and the step's cycles."""
    return data.StructLayout({
        "label": unsigned(4),
        "prediction": unsigned(4),
        "kind": unsigned(2),
        "cycles": unsigned(24),
    })


class TrainingCore(wiring.Component):
    """Trains an MLP on a stream of samples; see the module docstring.

    Parameters
    ----------
    params : CoreParams
    init : list of (W, b) int arrays, optional
        Initial weights and biases in the fixed-point format (as from
        :meth:`golden.fixed_model.FixedArith.init_params`); zeros if omitted.
    poison_collisions : bool
        For tests: a memory read of a word written in the same cycle gives the inverted word
        (in hardware it is undefined, and the core never uses it; a bit-exact run with this
        set shows that).

    Members
    -------
    i : In(stream.Signature(sample_layout))
        Samples, ``rows_0`` beats each (K pixels a beat; with ``skip_zeros`` the beats of
        :func:`sample_beats`); gaps allowed.
    o : Out(stream.Signature(result_layout))
        One result per sample.
    schedule : In(2)
        0 serial, 1 speculative, 2 pipelined. Sampled at the start of each step (with
        ``fmax_stages``, as it was in the cycle before: change it while no sample is loaded).
    threshold : In
        Accept when ``sum_j |y_stash_j - y_j| <= threshold`` (probability LSBs); 0 never
        speculates (with ``fmax_stages``, that test is made in the cycle before a step's
        start). Sampled while the softmax produces ``y`` (in every step; hold it while the
        core is not idle).
    batch : In
        Samples per weight update (1 .. max_batch).
    infer : In(1)
        Inference only: forward passes, no stash, no training.
    idle : Out(1)
        Nothing in flight: no sample loaded or in an engine, no pending backward pass, no
        update (a batch may be open).
    rb_addr, rb_data : weight readback (one word, latency 1, valid while ``idle``; with
        ``fmax_stages`` from the second cycle of ``idle``).
    wr_addr, wr_data, wr_en : In
        Host weight write: with ``wr_en`` the word ``wr_data`` is written to ``wr_addr`` at the
        clock edge (with ``fmax_stages`` at the next), one word per cycle, honoured only while
        ``idle`` (ignored otherwise).
        With ``wr_en`` low the core behaves exactly as without the port.
    stash_slot, stash_valid : Out
        The label-to-slot table and which labels have a stash entry.
    stash_words : Out (with ``skip_zeros``)
        The stored words of each slot's sample.
    cycles, samples, accepted, rejected, fwd_busy, bwd_busy, update_cycles : Out
        Counters since reset.
    fwd_active, bwd_active, upd_active : Out(1)
        The engines' busy flags, which ``fwd_busy``, ``bwd_busy`` and ``update_cycles`` count
        (for a counter kept elsewhere).
    """

    def __init__(self, params, init=None, *, poison_collisions=False):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self._p = p = params
        self._init = p.pack_params(init) if init is not None else None
        self._poison = bool(poison_collisions)
        super().__init__({
            "i": In(stream.Signature(sample_layout(p))),
            "o": Out(stream.Signature(result_layout(p))),
            "schedule": In(2),
            "threshold": In(p.threshold_width),
            "batch": In(range(p.max_batch + 1)),
            "infer": In(1),
            "idle": Out(1),
            "rb_addr": In(range(p.depth)),
            "rb_data": Out(p.weight_word),
            "wr_addr": In(range(p.depth)),
            "wr_data": In(p.weight_word),
            "wr_en": In(1),
            **({"stash_words": Out(data.ArrayLayout(range(p.rows(0) + 1), p.slots))}
               if p.skip_zeros else {}),
            "stash_slot": Out(data.ArrayLayout(unsigned(addr_width(p.slots)), p.classes)),
            "stash_valid": Out(p.classes),
            "cycles": Out(COUNTER_WIDTH),
            "samples": Out(COUNTER_WIDTH),
            "accepted": Out(COUNTER_WIDTH),
            "rejected": Out(COUNTER_WIDTH),
            "fwd_busy": Out(COUNTER_WIDTH),
            "bwd_busy": Out(COUNTER_WIDTH),
            "update_cycles": Out(COUNTER_WIDTH),
            "fwd_active": Out(1),
            "bwd_active": Out(1),
            "upd_active": Out(1),
        })
        self.fwd = ForwardEngine(p)
        self.bwd = BackwardEngine(p)
        self.upd = UpdateEngine(p)
        # No word is read in a cycle it is written where the read's value is used (see
        # params.sync_read): no_rw_check lets Yosys build no bypass for that case.
        rw = NO_RW_CHECK
        self.weights = memory.Memory(shape=p.weight_word, depth=p.depth,
                                     init=self._init or [], attrs=rw)
        self.grads = memory.Memory(shape=p.grad_word, depth=p.depth, init=[], attrs=rw)
        self.xbuf = memory.Memory(shape=p.x_word, depth=p.xbuf_depth, init=[], attrs=rw)
        self.stash_x = memory.Memory(shape=p.x_word, depth=p.stash_x_depth, init=[],
                                     attrs=rw)
        self.stash_act = memory.Memory(shape=p.act_word, depth=p.slots * p.act_words_per_slot,
                                       init=[], attrs=rw)

    @property
    def params(self):
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        C = p.classes
        fwd, bwd, upd = self.fwd, self.bwd, self.upd
        m.submodules.fwd = fwd
        m.submodules.bwd = bwd
        m.submodules.upd = upd
        for name in ("weights", "grads", "xbuf", "stash_x", "stash_act"):
            m.submodules[name] = getattr(self, name)

        # ---- memory ports and who drives them ----------------------------------------------
        w_bw = self.weights.write_port()
        g_w = self.grads.write_port()
        xb_w = self.xbuf.write_port()
        sx_w = self.stash_x.write_port()
        sa_w = self.stash_act.write_port()
        def read(mem, wr, name):
            return sync_read(m, mem, name, poison_from=wr if self._poison else None)
        w_a = read(self.weights, w_bw, "w_a")
        w_b = read(self.weights, w_bw, "w_b")
        g_r = read(self.grads, g_w, "g_r")
        xb_r = read(self.xbuf, xb_w, "xb_r")
        sx_r = read(self.stash_x, sx_w, "sx_r")
        sa_r = read(self.stash_act, sa_w, "sa_r")

        updating = upd.busy
        in_result = Signal()        # the controller's RESULT state: no engine runs
        host_wr = Signal()          # a host weight write (wr_en while idle)
        m.d.comb += host_wr.eq(self.wr_en & self.idle)
        # The weights' address choices by the host's access. With fmax_stages they come from
        # registers, not from the controller's idle test (the 85F's critical path at 84322c5,
        # and the ULX3S 25F's: the controller's state through ``idle`` into a weights block
        # RAM's address): a host write is written a cycle later, and the readback's address
        # reaches port A while the core was idle in the cycle before. The forward engine
        # then reads with its counters' registers, the first from the cycle after its start,
        # when that register already says not idle.
        rb_sel = Signal()           # port A: the host's readback address
        wr_sel = Signal()           # port B: the host's write
        wr_addr = Signal.like(self.wr_addr)
        wr_data = Signal.like(self.wr_data)
        if p.fmax_stages:
            m.d.sync += [rb_sel.eq(self.idle), wr_sel.eq(host_wr), wr_addr.eq(self.wr_addr),
                         wr_data.eq(self.wr_data)]
        else:
            m.d.comb += [rb_sel.eq(self.idle), wr_sel.eq(host_wr), wr_addr.eq(self.wr_addr),
                         wr_data.eq(self.wr_data)]
        # Weights port A: update reads during the batch update, host readback when idle,
        # the forward engine otherwise.
        # Fused batch boundary: the backward engine's last sweep feeds the update lanes.
        m.d.comb += [upd.f_valid.eq(bwd.fu_valid), upd.f_addr.eq(bwd.fu_addr),
                     upd.f_kind.eq(bwd.fu_kind), upd.f_g.eq(bwd.fu_g)]
        m.d.comb += [
            w_a.addr.eq(Mux(updating, upd.w_rd.addr,
                            Mux(bwd.fu_valid, bwd.fu_addr,
                                Mux(rb_sel, self.rb_addr, fwd.w_rd.addr)))),
            fwd.w_rd.data.eq(w_a.data), upd.w_rd.data.eq(w_a.data), self.rb_data.eq(w_a.data),
            # Port B: one address for its read (backward engine) and write (update, host)
            # sides. The host writes only while idle, when neither the backward engine nor the
            # update uses the port. Only the backward engine reads it, never while the update
            # writes (a separate sweep runs alone; a fused one writes during the gradient
            # sweep, which reads no weights): so the update takes the port in the cycles it
            # writes, not for the whole sweep, and every choice is a register (with the
            # update's ``busy``, decoded from its state, the choice was among the 85F's paths
            # over 10 ns to the weights' block RAMs at 4469bd7).
            w_b.addr.eq(Mux(upd.writing, upd.w_wr.addr, Mux(wr_sel, wr_addr, bwd.w_rd.addr))),
            w_bw.addr.eq(w_b.addr),
            w_bw.data.eq(Mux(upd.w_wr.en, upd.w_wr.data, wr_data)),
            w_bw.en.eq(upd.w_wr.en | wr_sel),
            bwd.w_rd.data.eq(w_b.data),
            # Accumulators: the backward engine's read-modify-write, or the update's clear.
            # The update reads its first word in the cycle it is started (from RESULT, when the
            # backward engine reads nothing; by state rather than by the start condition).
            g_r.addr.eq(Mux(updating | in_result, upd.g_rd.addr, bwd.g_rd.addr)),
            bwd.g_rd.data.eq(g_r.data), upd.g_rd.data.eq(g_r.data),
            g_w.addr.eq(Mux(updating, upd.g_wr.addr, bwd.g_wr.addr)),
            g_w.data.eq(Mux(updating, upd.g_wr.data, bwd.g_wr.data)),
            g_w.en.eq(Mux(updating, upd.g_wr.en, bwd.g_wr.en)),
            # Input buffer and stash pixels: the forward / backward engine reads.
            xb_r.addr.eq(fwd.x_rd.addr), fwd.x_rd.data.eq(xb_r.data),
            sx_r.addr.eq(bwd.x_rd.addr), bwd.x_rd.data.eq(sx_r.data),
            # Stash activations: written by the forward engine, read by the backward engine.
            sa_w.addr.eq(fwd.act_wr.addr), sa_w.data.eq(fwd.act_wr.data),
            sa_w.en.eq(fwd.act_wr.en),
            sa_r.addr.eq(bwd.act_rd.addr), bwd.act_rd.data.eq(sa_r.data),
        ]

        # ---- slots: free set, label table --------------------------------------------------
        free = Signal(p.slots, init=(1 << C) | (1 << (C + 1)))
        slot_of = Array(Signal(range(p.slots), init=label, name=f"slot_of{label}")
                        for label in range(C))
        valid = Signal(C)
        m.d.comb += [self.stash_valid.eq(valid),
                     *(self.stash_slot[label].eq(slot_of[label]) for label in range(C))]
        free_lowest = Signal(range(p.slots))
        for s in reversed(range(p.slots)):
            with m.If(free[s]):
                m.d.comb += free_lowest.eq(s)
        free_set = Signal(p.slots)    # slots freed this cycle
        free_clr = Signal(p.slots)    # slots taken this cycle
        m.d.sync += free.eq((free | free_set) & ~free_clr)

        # ---- loader ------------------------------------------------------------------------
        rows0 = p.rows(0)
        half_busy = Signal(2)
        half_set = Signal(2)
        half_clr = Signal(2)
        m.d.sync += half_busy.eq((half_busy | half_set) & ~half_clr)
        l_active = Signal()
        l_slot = Signal(range(p.slots))
        l_base = Signal(range(p.slots * rows0))     # l_slot's first stash pixel word
        l_half = Signal()
        l_count = Signal(range(rows0))
        ready = Signal()            # a loaded sample waits for the controller
        r_slot = Signal(range(p.slots))
        r_half = Signal()
        r_label = Signal(4)
        r_last = Signal()
        take = Signal()             # the controller takes the loaded sample this cycle
        load_last = Signal()        # a sample's last beat arrives (r_label is loaded)
        finishing = Signal()        # skip_zeros: a sample's end beat in the loader's stage B
        with m.If(take):
            m.d.sync += ready.eq(0)
        next_half = Signal()
        with m.If(~l_active & ~ready & ~finishing & (free != 0)
                  & ~half_busy.bit_select(next_half, 1)):
            m.d.sync += [l_active.eq(1), l_slot.eq(free_lowest),
                         l_base.eq(p.slot_bases(rows0)[free_lowest]), l_half.eq(next_half),
                         l_count.eq(0), next_half.eq(~next_half)]
            m.d.comb += [free_clr.eq(1 << free_lowest), half_set.eq(1 << next_half)]
        m.d.comb += self.i.ready.eq(l_active)
        # Both memories hold the pixels as u0.8 values, converted here.
        values = Signal(p.value_word)
        m.d.comb += [values[k].eq(pixel_value(self.i.payload.pixels[k]))
                     for k in range(p.inputs)]
        load_label = self.i.payload.label
        if p.skip_zeros:
            # Only the words with a nonzero pixel are stored, one after the other, each with
            # its row; each half and each slot keeps how many it holds. A beat is registered
            # with its values and its zero test (stage A) and written in the next cycle (stage
            # B), so that no path runs from the stream (the link's sample buffer, a block RAM)
            # through the zero test into the memories' write enables and addresses (the 25F's
            # critical path without the register). A sample's end beat stops the loader at
            # stage A; at stage B it makes the sample ready, and no new slot is claimed
            # before that.
            l_nz = Signal(range(rows0 + 1))
            nonzero = Signal()
            xcount = Array(Signal(range(rows0 + 1), name=f"xcount{h}") for h in range(2))
            scount = Array(Signal(range(rows0 + 1), name=f"scount{s}")
                           for s in range(p.slots))
            bq = Signal()           # a beat in stage B
            bq_word = Signal(p.x_word)
            bq_nz, bq_end, bq_last = Signal(), Signal(), Signal()
            bq_label = Signal(4)
            m.d.comb += [nonzero.eq(self.i.payload.pixels.as_value().any()),
                         finishing.eq(bq & bq_end)]
            load_label = bq_label
            m.d.sync += bq.eq(self.i.valid & self.i.ready)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [bq_word.pix.eq(values), bq_word.row.eq(self.i.payload.row),
                             bq_nz.eq(nonzero), bq_end.eq(self.i.payload.end),
                             bq_label.eq(self.i.payload.label),
                             bq_last.eq(self.i.payload.last), l_count.eq(l_count + 1)]
                with m.If(self.i.payload.end):
                    m.d.sync += l_active.eq(0)
            with m.If(~l_active & ~bq):
                m.d.sync += l_nz.eq(0)
            m.d.comb += [
                xb_w.addr.eq(l_half * rows0 + l_nz), xb_w.data.eq(bq_word),
                sx_w.addr.eq(l_base + l_nz), sx_w.data.eq(bq_word),
            ]
            with m.If(bq & bq_nz):
                m.d.comb += [xb_w.en.eq(1), sx_w.en.eq(1)]
                m.d.sync += l_nz.eq(l_nz + 1)
            with m.If(finishing):
                m.d.comb += load_last.eq(1)
                m.d.sync += [ready.eq(1), r_slot.eq(l_slot), r_half.eq(l_half),
                             r_label.eq(bq_label), r_last.eq(bq_last),
                             xcount[l_half].eq(l_nz + bq_nz), scount[l_slot].eq(l_nz + bq_nz)]
            fwd_count, bwd_count = xcount[r_half], scount[bwd.slot]
            m.d.comb += [self.stash_words[s].eq(scount[s]) for s in range(p.slots)]
        else:
            m.d.comb += [
                xb_w.addr.eq(l_half * rows0 + l_count), xb_w.data.eq(values),
                sx_w.addr.eq(l_base + l_count), sx_w.data.eq(values),
            ]
            with m.If(self.i.valid & self.i.ready):
                m.d.comb += [xb_w.en.eq(1), sx_w.en.eq(1)]
                m.d.sync += l_count.eq(l_count + 1)
                with m.If(l_count == rows0 - 1):
                    m.d.comb += load_last.eq(1)
                    m.d.sync += [l_active.eq(0), ready.eq(1), r_slot.eq(l_slot),
                                 r_half.eq(l_half), r_label.eq(self.i.payload.label),
                                 r_last.eq(self.i.payload.last)]

        # ---- controller --------------------------------------------------------------------
        cur_slot = Signal(range(p.slots))
        cur_half = Signal()
        cur_label = Signal(range(C))
        cur_last = Signal()
        cur_sched = Signal(2)
        kind = Signal(2)
        count = Signal(range(p.max_batch + 1))      # samples in the current batch so far
        pend = Signal()                             # pipelined: a backward is pending
        pend_slot = Signal(range(p.slots))
        pend_label = Signal(range(C))
        spec_slot = Signal(range(p.slots))
        fwd_seen = Signal()
        bwd_seen = Signal()
        step_cycles = Signal(24)
        batch_end = Signal()
        # ``count + 1 >= batch``, registered: count changes only as the controller leaves
        # RESULT for WAIT, and batch_end is used only in the states after WAIT, by when the
        # register has caught up (the compare is then off the paths from the step's end to
        # the update's start and the fused pass's flags).
        count_end = Signal()
        m.d.sync += count_end.eq(count + 1 >= self.batch)
        m.d.comb += batch_end.eq(count_end | cur_last)

        # The forward engine's half and slot are the loaded sample's, whether or not it is
        # started: it addresses the input buffer with them while it waits for a start.
        m.d.comb += [fwd.half.eq(r_half), fwd.slot.eq(r_slot)]
        if p.skip_zeros:
            # The stored words of the sample's half and of the backward engine's slot.
            m.d.comb += [fwd.count.eq(fwd_count), bwd.count.eq(bwd_count)]

        def start_fwd(stash=1):
            return [fwd.start.eq(1), fwd.stash.eq(stash)]

        fused = Signal()    # this step's last backward pass also updated the weights

        # The backward engine's slot is set by state alone, not under the start conditions: a
        # gradient-only pass addresses the stash pixels with it in the cycle it is started.
        def start_bwd(label, delta=1, grad=1, negate=0, fuse=0):
            return [bwd.start.eq(1), bwd.label.eq(label),
                    bwd.delta.eq(delta), bwd.grad.eq(grad), bwd.negate.eq(negate),
                    bwd.fuse.eq(fuse)]

        def start_final_bwd():
            # The step's own, non-speculative backward pass: at a batch boundary it applies
            # the update as it sweeps (fused), so no separate update sweep follows. Not when
            # zero words are skipped: the pass does not visit every word.
            if p.skip_zeros:
                return start_bwd(cur_label)
            m.d.sync += fused.eq(batch_end)
            return start_bwd(cur_label, fuse=batch_end)

        def both_done():
            """True once both engines have finished the step (each may finish first).

            Emits ``m.If`` blocks: call it once per state, before any If/Elif chain."""
            with m.If(fwd.done):
                m.d.sync += fwd_seen.eq(1)
            with m.If(bwd.done):
                m.d.sync += bwd_seen.eq(1)
            return (fwd_seen | fwd.done) & (bwd_seen | bwd.done)

        with m.If(fwd.done):
            m.d.comb += half_clr.eq(1 << cur_half)
        m.d.sync += step_cycles.eq(step_cycles + 1)

        # Speculation distance: sum over classes of |y_stash - y|, folded as the softmax
        # produces y, a group of softmax_ways classes per cycle, in two stages: a group's
        # differences are registered in the cycle it enters the softmax's output (y_new_valid),
        # and summed into the margin in the next, the first cycle the forward engine's y is
        # valid, at least one cycle before it is done. So the accept decision in the cycle both
        # engines are done starts from a register: the sum is not on one path with the compare
        # and the backward engine's next address, the differences not on one path with the
        # sum, and only one group's differences are built (not one per class). The backward
        # engine fetched y_stash at the start of its pass, long before the first group comes
        # (asserted below): counted from the start of the pass, the first group comes
        # cols(L-1) + 2 + (groups - 1) cycles before the end of the forward pass's cycle count
        # (CycleModel.forward), the last groups - 1 cycles after the first; the fetch of
        # y_stash ends act_words_per_slot + 2 cycles after the start.
        G = p.softmax_ways
        groups = -(-C // G)
        shortest = CycleModel(p).forward_cycles(0 if p.skip_zeros else None)
        first_group_at = shortest - p.cols(p.n_layers - 1) - 2 - (groups - 1)
        assert first_group_at > p.act_words_per_slot + 2, "forward pass shorter than the fetch"
        # Folded into the margin threshold - distance as it is summed, so that the decision is
        # the margin's sign: no compare on the path from it to the backward engine's start.
        dist_max = 2 * C << p.fmt.prob_frac
        margin = Signal(signed(max(p.threshold_width, dist_max.bit_length()) + 1))
        # The differences are registered negated, -|y_stash - y|, and summed with the
        # threshold: one multi-operand adder (Yosys builds the same for threshold - sum).
        terms = [Signal(signed(p.fmt.prob_frac + 1), name=f"dist{j}") for j in range(G)]
        terms_valid = Signal()
        terms_group = Signal.like(fwd.y_new_group)
        m.d.sync += terms_valid.eq(fwd.y_new_valid)
        if groups > 1 and p.fmax_stages:
            # The stash's y in class order, shifted down a group at each new group, so that
            # the group's stash values are always at the bottom, in registers: chosen among the
            # groups by the group index, they made the 85F's critical path with the link
            # (the group index through the choice and the compare into ``dist0``, 10.29 ns at
            # e962cab). Loaded while the group index is 0 and no group comes: from the
            # softmax's start to its first group, after the backward engine's fetch (above).
            # The padding past the last class is never loaded and only ever shifts into
            # itself: 0.
            stash_sr = Signal(data.ArrayLayout(unsigned(p.fmt.prob_frac), groups * G))
            with m.If(fwd.y_new_valid):
                m.d.sync += [stash_sr[k].eq(stash_sr[k + G]) for k in range((groups - 1) * G)]
            with m.Elif(fwd.y_new_group == 0):
                m.d.sync += [stash_sr[c].eq(bwd.y[c]) for c in range(C)]
        for j in range(G):
            classes_j = [g * G + j for g in range(groups) if g * G + j < C]
            if groups == 1:
                stash_y = bwd.y[j]
            elif p.fmax_stages:
                stash_y = stash_sr[j]
            else:
                # A lane past the last class compares 0 with 0 (its y is 0).
                stash_y = Array([bwd.y[c] for c in classes_j]
                                + [Const(0, p.fmt.prob_frac)] * (groups - len(classes_j))
                                )[fwd.y_new_group]
            y_j = fwd.y_new[j]
            with m.If(fwd.y_new_valid):
                m.d.sync += terms[j].eq(Mux(stash_y > y_j, y_j - stash_y, stash_y - y_j))
        with m.If(fwd.y_new_valid):
            m.d.sync += terms_group.eq(fwd.y_new_group)
        with m.If(terms_valid):
            if groups == 1:
                m.d.sync += margin.eq(tree_sum([self.threshold, *terms]))
            else:
                m.d.sync += margin.eq(tree_sum([Mux(terms_group == 0, self.threshold, margin),
                                                *terms]))

        m.d.comb += [self.o.payload.label.eq(cur_label),
                     self.o.payload.prediction.eq(fwd.prediction),
                     self.o.payload.kind.eq(kind), self.o.payload.cycles.eq(step_cycles)]

        label_in = r_label[:(C - 1).bit_length()]
        # ``slot_of[label_in]`` and ``valid[label_in]``, kept in registers so that the start
        # decisions in WAIT begin at flip-flops, not at a lookup among the classes (on the
        # iCE40 the label through that lookup into the backward engine's stash pixel address
        # was the critical path). They follow the label that r_label holds in the next cycle
        # (a sample's last beat loads it) and the entry RESULT writes in this one (forwarded
        # when it is the label looked up), so they are exact in every cycle.
        lab_slot = Signal(range(p.slots))
        lab_valid = Signal()
        look = Signal.like(label_in)
        commit = Signal()           # RESULT writes the label table at this edge
        m.d.comb += look.eq(Mux(load_last, load_label[:len(label_in)], label_in))
        hit = commit & (cur_label == look)
        m.d.sync += [lab_slot.eq(Mux(hit, cur_slot, slot_of[look])),
                     lab_valid.eq(hit | valid.bit_select(look, 1))]
        # The schedule's tests in WAIT. With fmax_stages they are registers, a cycle behind
        # the inputs (which the host changes between runs, never in the cycle before a
        # sample is taken): from the link's schedule register through the compare and the
        # backward engine's slot choice into its word count was among the 85F's paths over
        # 10 ns at 4469bd7 (10.10 ns).
        sched_pipelined, sched_speculating = Signal(), Signal()
        schedule = Signal.like(self.schedule)       # the schedule the tests are of
        tests = [schedule.eq(self.schedule), sched_pipelined.eq(self.schedule == PIPELINED),
                 sched_speculating.eq((self.schedule == SPECULATIVE) & (self.threshold != 0))]
        if p.fmax_stages:
            m.d.sync += tests
        else:
            m.d.comb += tests
        with m.FSM():
            with m.State("WAIT"):
                # A loader that has claimed a slot but received no beat holds no sample.
                # An open batch is state, not work: its accumulators wait for more samples.
                # A fused update's last word is written in the first cycle of WAIT (its stage
                # 3, two cycles after the backward engine is done; with fmax_stages in the
                # second, its stage 4): idle waits for it.
                m.d.comb += self.idle.eq(~ready & ~(l_active & (l_count != 0)) & ~finishing
                                         & ~pend & ~upd.writing)
                m.d.comb += bwd.slot.eq(Mux(sched_pipelined, pend_slot, lab_slot))
                with m.If(ready):
                    m.d.comb += take.eq(1)
                    m.d.sync += [cur_slot.eq(r_slot), cur_half.eq(r_half), cur_label.eq(label_in),
                                 cur_last.eq(r_last), cur_sched.eq(schedule),
                                 step_cycles.eq(1), fwd_seen.eq(0), bwd_seen.eq(0), fused.eq(0),
                                 kind.eq(NOT_ATTEMPTED), spec_slot.eq(lab_slot)]
                    with m.If(self.infer):
                        m.d.comb += start_fwd(stash=0)
                        m.d.sync += kind.eq(INFERENCE)
                        m.next = "INFER"
                    with m.Elif(sched_speculating & lab_valid):
                        m.d.comb += start_fwd()
                        m.d.comb += start_bwd(label_in)
                        m.next = "SPEC"
                    with m.Elif(sched_pipelined):
                        m.d.comb += start_fwd()
                        with m.If(pend):
                            m.d.comb += start_bwd(pend_label)
                        with m.Else():
                            m.d.sync += bwd_seen.eq(1)
                        m.next = "PIPE"
                    with m.Else():
                        m.d.comb += start_fwd()
                        m.next = "SERIAL_FWD"
            with m.State("INFER"):
                with m.If(fwd.done):
                    m.d.comb += free_set.eq(1 << cur_slot)
                    m.next = "RESULT"
            with m.State("SERIAL_FWD"):
                m.d.comb += bwd.slot.eq(cur_slot)
                with m.If(fwd.done):
                    m.d.comb += start_final_bwd()
                    m.next = "BWD"
            with m.State("BWD"):
                with m.If(bwd.done):
                    m.next = "RESULT"
            with m.State("SPEC"):
                m.d.comb += bwd.slot.eq(spec_slot)
                done = both_done()   # call once: it emits its own m.If blocks
                with m.If(done & (margin >= 0)):       # distance <= threshold
                    m.d.sync += kind.eq(ACCEPTED)
                    m.next = "RESULT"
                with m.Elif(done):
                    m.d.sync += kind.eq(REJECTED)
                    m.d.comb += start_bwd(cur_label, delta=0, grad=1, negate=1)
                    m.next = "UNDO"
            with m.State("UNDO"):
                m.d.comb += bwd.slot.eq(cur_slot)
                with m.If(bwd.done):
                    m.d.comb += start_final_bwd()
                    m.next = "BWD"
            with m.State("PIPE"):
                m.d.comb += bwd.slot.eq(cur_slot)
                with m.If(both_done()):
                    with m.If(batch_end):
                        m.d.comb += start_final_bwd()
                        m.d.sync += pend.eq(0)
                        m.next = "BWD"
                    with m.Else():
                        m.d.sync += [pend.eq(1), pend_slot.eq(cur_slot),
                                     pend_label.eq(cur_label)]
                        m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += in_result.eq(1)
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    with m.If(kind != INFERENCE):
                        # The sample becomes its label's stash entry; the old slot is freed.
                        m.d.comb += commit.eq(1)
                        m.d.sync += [slot_of[cur_label].eq(cur_slot),
                                     valid.eq(valid | (1 << cur_label))]
                        m.d.comb += free_set.eq(1 << slot_of[cur_label])
                    m.d.sync += self.samples.eq(self.samples + 1)
                    with m.If(kind == ACCEPTED):
                        m.d.sync += self.accepted.eq(self.accepted + 1)
                    with m.If(kind == REJECTED):
                        m.d.sync += self.rejected.eq(self.rejected + 1)
                    with m.If(kind == INFERENCE):
                        m.next = "WAIT"
                    with m.Elif(batch_end & fused):
                        m.d.sync += count.eq(0)
                        m.next = "WAIT"
                    with m.Elif(batch_end):
                        m.d.comb += upd.start.eq(1)
                        m.d.sync += count.eq(0)
                        m.next = "UPDATE"
                    with m.Else():
                        m.d.sync += count.eq(count + 1)
                        m.next = "WAIT"
            with m.State("UPDATE"):
                with m.If(upd.done):
                    m.next = "WAIT"

        m.d.comb += [self.fwd_active.eq(fwd.busy), self.bwd_active.eq(bwd.busy),
                     self.upd_active.eq(upd.busy)]
        m.d.sync += [
            self.cycles.eq(self.cycles + 1),
            self.fwd_busy.eq(self.fwd_busy + fwd.busy),
            self.bwd_busy.eq(self.bwd_busy + bwd.busy),
            self.update_cycles.eq(self.update_cycles + upd.busy),
        ]
        return m
