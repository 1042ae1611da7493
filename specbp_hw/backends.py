"""Training runs of the core on a simulator backend, with the same results from each.

Two backends run the same :class:`~specbp_hw.core.TrainingCore`:

* ``cxxrtl``: the design compiled to C++ (:mod:`specbp_hw.cxxrtl`); one build per hardware
  configuration, cached on disk. The initial weights are written into the weight memory at run
  time, so a new seed never rebuilds. Samples stream in and results out in C++ loops.
* ``pysim``: Amaranth's own simulator (:func:`specbp_hw.pysim.run_pysim`); slow, needs nothing
  but Python.

A run streams every epoch's samples back to back, as a host would: the last sample of each
epoch is marked ``last`` (its batch closes there). :class:`CoreRun` holds per-sample results,
the counters and the trained parameters.
"""

from dataclasses import dataclass, field
import time

import numpy as np

from .core import TrainingCore
from .params import CoreParams
from .pysim import run_pysim, schedule_code

__all__ = ["CoreRun", "CxxrtlTrainer", "WordCodec", "pack_beats", "decode_results",
           "train_pysim"]

COUNTERS = ("cycles", "samples", "accepted", "rejected", "fwd_busy", "bwd_busy",
            "update_cycles")


@dataclass
class CoreRun:
    """Results of a training run of the core (any backend)."""

    params: list                 # [(W, b), ...] int64, the weight memory at the end
    kinds: np.ndarray            # per sample: 0 not attempted, 1 accepted, 2 rejected
    predictions: np.ndarray      # per sample: argmax of the forward pass's logits
    step_cycles: np.ndarray      # per sample: cycles of its step, as the core reports them
    counters: dict               # the core's counters at the end
    sim_cycles: int              # clock cycles simulated, from the first beat to idle
    sim_seconds: float           # wall time of the simulation itself (no build, no checks)
    mismatch: str = None         # first difference found by a per-batch check, or None
    checked_batches: int = 0     # batches whose weights were compared (``on_batch``)
    extra: dict = field(default_factory=dict)


def last_mask(n_samples, epochs):
    """Boolean mask over ``epochs`` repetitions of ``n_samples``: each epoch's last sample."""
    mask = np.zeros(n_samples * epochs, bool)
    if n_samples:
        mask[n_samples - 1::n_samples] = True
    return mask


def pack_beats(params, images, labels, last):
    """Input stream beats as integers (``uint64``): K pixels, then the label, then ``last``.

    Each sample is ``rows(0)`` beats; label and ``last`` are repeated on every beat of a sample
    (the core takes them from its last beat). With ``skip_zeros`` a sample is the beats of
    :func:`specbp_hw.core.sample_beats`, each with its row and ``end`` after ``last``.
    """
    K = params.inputs
    rows = params.rows(0)
    n = len(labels)
    px = np.asarray(images, np.uint64).reshape(n, rows, K)
    shifts = (np.arange(K, dtype=np.uint64) * np.uint64(8))
    beats = (px << shifts).sum(axis=2, dtype=np.uint64)
    beats |= np.asarray(labels, np.uint64)[:, None] << np.uint64(8 * K)
    beats |= np.asarray(last, np.uint64)[:, None] << np.uint64(8 * K + 4)
    if not params.skip_zeros:
        return beats.reshape(-1)
    keep = beats & np.uint64((1 << 8 * K) - 1) != 0
    keep[~keep.any(axis=1), 0] = True               # an image without a nonzero pixel
    end = np.zeros_like(keep)
    end[np.arange(n), rows - 1 - np.argmax(keep[:, ::-1], axis=1)] = True
    row_at = np.uint64(8 * K + 5)
    beats |= np.arange(rows, dtype=np.uint64)[None, :] << row_at
    beats |= end.astype(np.uint64) << (row_at + np.uint64(rows.bit_length()))
    return beats[keep]


def decode_results(payloads):
    """Result stream payloads -> dict of arrays (label, prediction, kind, cycles)."""
    v = np.asarray(payloads, np.uint64)
    return {"label": (v & np.uint64(0xF)).astype(np.int64),
            "prediction": (v >> np.uint64(4) & np.uint64(0xF)).astype(np.int64),
            "kind": (v >> np.uint64(8) & np.uint64(0x3)).astype(np.int64),
            "cycles": (v >> np.uint64(10) & np.uint64(0xFFFFFF)).astype(np.int64)}


class WordCodec:
    """Vectorised conversion between weight-memory rows and golden ``[(W, b), ...]`` arrays."""

    def __init__(self, params):
        self.p = params
        pos = list(params._positions())
        self.word = np.array([q[0] for q in pos], np.int64)
        self.elem = np.array([q[1] for q in pos], np.int64)
        self.layer = np.array([q[2] for q in pos], np.int64)
        self.i = np.array([-1 if q[3] is None else q[3] for q in pos], np.int64)
        self.j = np.array([q[4] for q in pos], np.int64)
        self.width = params.fmt.weight.width

    def elements(self, chunks):
        """Memory rows given as little-endian 32-bit chunks (``depth x chunks``) -> signed
        elements, shape ``(depth, block)``."""
        w, block = self.width, self.p.block
        raw = np.ascontiguousarray(chunks, dtype="<u4").reshape(self.p.depth, -1)
        bits = np.unpackbits(raw.view(np.uint8), axis=1, bitorder="little")
        bits = bits[:, :w * block].reshape(self.p.depth, block, w).astype(np.int64)
        value = (bits << np.arange(w, dtype=np.int64)).sum(axis=2)
        return np.where(value >> (w - 1), value - (1 << w), value)

    def unpack(self, elements):
        out = [(np.zeros((a, b), np.int64), np.zeros(b, np.int64))
               for a, b in zip(self.p.layers[:-1], self.p.layers[1:])]
        vals = elements[self.word, self.elem]
        for l, (w, b) in enumerate(out):
            sel = self.layer == l
            bias = sel & (self.i < 0)
            b[self.j[bias]] = vals[bias]
            wsel = sel & (self.i >= 0)
            w[self.i[wsel], self.j[wsel]] = vals[wsel]
        return out

    def pack(self, params):
        """Golden parameters -> memory rows as integers (object array, one per row)."""
        el = np.zeros((self.p.depth, self.p.block), np.int64)
        for l, (w, b) in enumerate(params):
            sel = self.layer == l
            bias = sel & (self.i < 0)
            el[self.word[bias], self.elem[bias]] = np.asarray(b)[self.j[bias]]
            wsel = sel & (self.i >= 0)
            el[self.word[wsel], self.elem[wsel]] = np.asarray(w)[self.i[wsel], self.j[wsel]]
        mask = (1 << self.width) - 1
        rows = np.empty(self.p.depth, object)
        for r in range(self.p.depth):
            v = 0
            for e in reversed(el[r].tolist()):
                v = (v << self.width) | (e & mask)
            rows[r] = v
        return rows


class CxxrtlTrainer:
    """Compiled simulations of one hardware configuration; each :meth:`train` starts afresh.

    Parameters
    ----------
    params : CoreParams
    cache_dir : path-like, optional
        Build cache (default ``~/.cache/specbp_hw/cxxrtl``).

    Raises
    ------
    specbp_hw.cxxrtl.CxxrtlError
        No compiler, or the build failed.
    """

    def __init__(self, params, *, cache_dir=None):
        from .cxxrtl import CxxrtlError, CxxrtlSim, compiler_available
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        if not compiler_available():
            # Checked before elaborating anything (the design's conversion takes seconds).
            raise CxxrtlError("no C++ compiler found (set CXX or install g++)")
        self.params = params
        self.codec = WordCodec(params)
        # The weights come from write_memory, so the build does not depend on the seed.
        self._sim = CxxrtlSim(TrainingCore(params), cache_dir=cache_dir)
        self.cache_hit = self._sim.cache_hit
        self.build_seconds = self._sim.build_seconds

    @classmethod
    def from_library(cls, params, library_path):
        """A trainer on an already built library (another process's build): no conversion."""
        from .cxxrtl import CxxrtlSim
        self = object.__new__(cls)
        self.params = params
        self.codec = WordCodec(params)
        self._sim = CxxrtlSim.load(library_path)
        self.cache_hit = True
        self.build_seconds = 0.0
        return self

    @property
    def library_path(self):
        return self._sim.library_path

    def close(self):
        self._sim.close()

    def _fresh(self):
        sim = self._sim.fresh()
        sim.reset()
        return sim

    def read_params(self, sim):
        raw = sim.read_memory_chunks("weights")
        return self.codec.unpack(self.codec.elements(raw))

    def train(self, init, images, labels, *, schedule, threshold, batch, epochs=1,
              on_batch=None, on_epoch=None, vcd=None, progress=None):
        """Train on ``epochs`` passes over ``images``/``labels``; returns a :class:`CoreRun`.

        ``threshold`` is the register value (probability LSBs). ``on_batch(b, params)`` is
        called with the weights after each complete batch ``b`` (0-based over the whole run,
        batches restart at each epoch) while the run continues, without disturbing its timing;
        it returns None or a string describing a mismatch (then no further calls are made).
        ``on_epoch(e, params)`` is called likewise with the weights after each epoch but the
        last (whose weights are the result's). Both need ``batch >= 2`` (with one-sample
        batches the next update may already be under way when a result arrives). ``vcd = (path, first_cycle, n_cycles)`` records a window.
        ``progress(samples_done, cycles)`` is called now and then.
        """
        p = self.params
        n = len(labels)
        total = n * epochs
        sim = self._fresh()
        sim.write_memory("weights", self.codec.pack(init))
        sim["schedule"] = schedule_code(schedule)
        sim["threshold"] = int(threshold)
        sim["batch"] = int(batch)
        sim["infer"] = 0
        sim["wr_en"] = 0        # the host weight write port stays unused
        beats = pack_beats(p, np.tile(images, (epochs, 1)), np.tile(labels, epochs),
                           last_mask(n, epochs))
        # Stop points: results after which the weights equal those after a batch (the first
        # result of the next batch, whose forward pass reads the updated weights), and the
        # progress reports in between. Batches restart at each epoch (its last closes it).
        starts = [e * n + s for e in range(epochs) for s in range(0, n, batch)][1:] \
            if batch >= 2 and (on_batch is not None or on_epoch is not None) else []
        start_set = {s: i for i, s in enumerate(starts)}
        epoch_of = {e * n: e - 1 for e in range(1, epochs)}
        stops = sorted({s + 1 for s in starts} | set(range(1000, total, 1000)) | {total})
        results = np.zeros(total, np.uint64)
        mismatch, checked = None, 0
        start = time.perf_counter()
        sent = received = 0
        # Trace window [first, end) in cycles since reset; None when not (or no longer) tracing.
        window = [vcd[1], vcd[1] + vcd[2]] if vcd is not None else None
        for stop in stops:
            while received < stop:
                limit = 1 << 62
                if window is not None:
                    if sim.cycles >= window[0] and not sim.tracing:
                        sim.trace_start()
                    limit = (window[1] if sim.tracing else window[0]) - sim.cycles
                payloads, _, sent_now = sim.stream_run(
                    source=("i", beats), source_start=sent, sink=("o", stop - received),
                    max_cycles=max(limit, 1), partial=True)
                results[received:received + len(payloads)] = payloads
                sent += sent_now
                received += len(payloads)
                if window is not None and sim.tracing and sim.cycles >= window[1]:
                    sim.trace_stop(vcd[0])
                    window = None
            if received - 1 in start_set:
                weights = self.read_params(sim)
                if on_batch is not None and mismatch is None:
                    checked += 1
                    mismatch = on_batch(start_set[received - 1], weights)
                if on_epoch is not None and received - 1 in epoch_of:
                    on_epoch(epoch_of[received - 1], weights)
            if progress is not None:
                progress(received, sim.cycles)
        sim.run_until("idle", 1, max_cycles=10 * p.depth + 100_000)
        if sim.tracing:
            sim.trace_stop(vcd[0])
        seconds = time.perf_counter() - start
        res = decode_results(results)
        counters = {name: sim.get(name) for name in COUNTERS}
        run = CoreRun(params=self.read_params(sim), kinds=res["kind"],
                      predictions=res["prediction"], step_cycles=res["cycles"],
                      counters=counters, sim_cycles=sim.cycles, sim_seconds=seconds,
                      mismatch=mismatch, checked_batches=checked)
        sim.close()
        return run


def train_pysim(params, init, images, labels, *, schedule, threshold, batch, epochs=1,
                vcd=None):
    """The same run as :meth:`CxxrtlTrainer.train` in Amaranth's simulator (no per-batch
    checks: the result is compared at the end)."""
    n = len(labels)
    start = time.perf_counter()
    try:
        rtl = run_pysim(params, init, np.tile(images, (epochs, 1)), np.tile(labels, epochs),
                        schedule=schedule, threshold=threshold, batch=batch, vcd=vcd,
                        last=last_mask(n, epochs))
    except RecursionError:
        # Amaranth compiles each process to Python source; the adder trees of 8 or more inputs
        # per cycle nest deeper than Python's compiler allows.
        raise ValueError(f"Amaranth's simulator cannot compile this design ({params.inputs} "
                         f"inputs per cycle nest too deeply for Python); use --backend cxxrtl "
                         f"or fewer --inputs") from None
    return CoreRun(params=rtl.params, kinds=rtl.kinds, predictions=rtl.predictions,
                   step_cycles=rtl.step_cycles, counters=rtl.counters,
                   sim_cycles=rtl.counters["cycles"], sim_seconds=rtl.seconds,
                   extra={"wall_seconds": time.perf_counter() - start})
