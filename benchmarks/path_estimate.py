"""Rank the register endpoints of a synthesised ECP5 netlist by an estimate of their path delay.

nextpnr reports one critical path per clock, after an hour of place and route on the 85F; each
cut of that path so far uncovered another of about the same length (docs/BUILD.md). This
estimate shows the whole tail in seconds, from the netlist Yosys wrote before place and route
(``build/BOARD/top.json`` of ``python -m specbp_hw.build``), so that one can see how many paths
stand between a design and a clock before building it. Rerun:

    python benchmarks/path_estimate.py build/ulx3s-85f/top.json
    python benchmarks/path_estimate.py build/ulx3s-85f/top.json --top 60 --match margin
    python benchmarks/path_estimate.py build/ulx3s-85f/top.json --top 0 --trace 1

The model is static timing with fixed delays: the logic delays of the cells' pins as nextpnr
0.11's ECP5 critical-path reports give them (``LOGIC_NS``, ``CLK_TO_Q_NS``, ``SETUP_NS``), plus
one routing delay (``--routing``, 1.0 ns) for every net that does not use a dedicated
connection (carry chains, LUT into PFUMX, PFUMX into L6MUX21). A path's estimate is its
arrival time at the endpoint, setup included. It knows nothing of placement: a route across
the chip costs what a route inside a slice does, so it ranks paths by their logic and number
of routed nets, and its nanoseconds are not nextpnr's. Endpoints are grouped by register (or
block-RAM / DSP port), each with its worst path.
"""

import argparse
import json
import re
import sys
from pathlib import Path

# Pin delays, ns, from nextpnr 0.11's ECP5 critical-path reports (speed grade 6, the
# amaranth-boards default): LUT4 F 0.24; CCU2C data to FCO 0.45, to F 0.40, FCI to FCO 0.07
# per CCU2C (its two halves); PFUMX / L6MUX21 OFX 0.24; TRELLIS_FF clock to Q 0.52; DP16KD
# clock to DO 4.26, DI setup 0.22.
LOGIC_NS = {
    "LUT4": lambda i, o: 0.24,
    "PFUMX": lambda i, o: 0.24,
    "L6MUX21": lambda i, o: 0.24,
    "CCU2C": lambda i, o: (0.07 if o == "COUT" else 0.40) if i == "CIN"
    else (0.45 if o == "COUT" else 0.40),
    # Not seen on a reported path: a guess, the DSPs being combinational (no pipeline
    # registers are packed into them).
    "MULT18X18D": lambda i, o: 4.0,
    # Distributed RAM: the read address to the data out, through a LUT.
    "TRELLIS_DPR16X4": lambda i, o: 0.24 if i.startswith("RAD") else None,
}
CLK_TO_Q_NS = {"TRELLIS_FF": 0.52, "DP16KD": 4.26}
SETUP_NS = {"DP16KD": 0.22}
CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK"}
# (driver type, driver pin, sink type, sink pin) pairs that do not use general routing.
DEDICATED = [("CCU2C", "COUT", "CCU2C", "CIN"), (None, None, "PFUMX", "ALUT"),
             (None, None, "PFUMX", "BLUT"), (None, None, "L6MUX21", "D0"),
             (None, None, "L6MUX21", "D1")]
THRESHOLDS_NS = (20.0, 16.0, 12.5, 11.0, 10.0)


class NetlistError(Exception):
    pass


def load_module(path, module=None):
    """The cells and net names of ``module`` (the netlist's top by default) in a Yosys JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise NetlistError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise NetlistError(f"{path} is not JSON ({e.msg} at line {e.lineno}): give the "
                           f"top.json Yosys wrote in the build directory") from None
    modules = data.get("modules") if isinstance(data, dict) else None
    if not modules:
        raise NetlistError(f"{path} has no modules: give the top.json Yosys wrote in the "
                           f"build directory")
    if module is None:
        tops = [n for n, m in modules.items() if str(m.get("attributes", {}).get("top", "0"))
                .strip("0") != ""]
        module = tops[0] if tops else ("top" if "top" in modules else None)
    if module not in modules:
        raise NetlistError(f"{path} has no module {module!r}; give one with --module")
    m = modules[module]
    types = {c["type"] for c in m["cells"].values()}
    if not types & {"LUT4", "TRELLIS_FF"}:
        raise NetlistError(f"module {module!r} of {path} has no ECP5 cells (LUT4, TRELLIS_FF): "
                           f"this estimates netlists synthesised for ECP5 only")
    return m["cells"], m.get("netnames", {})


class Estimate:
    """Arrival times of every net bit of a flattened ECP5 module."""

    def __init__(self, cells, netnames, routing_ns=1.0):
        self.cells = cells
        self.routing_ns = routing_ns
        self.driver = {}
        for name, cell in cells.items():
            for pin, direction in cell["port_directions"].items():
                if direction == "output":
                    for bit in cell["connections"][pin]:
                        if isinstance(bit, int):
                            self.driver[bit] = (name, pin)
        self.names = {}
        for name, net in netnames.items():
            if name.startswith("$") or net.get("hide_name"):
                continue
            for i, bit in enumerate(net["bits"]):
                if isinstance(bit, int) and (bit not in self.names
                                             or len(name) < len(self.names[bit][0])):
                    self.names[bit] = (name, i)
        self.arrival = {}     # bit -> (ns, the input bit it came through, routed nets)
        self._walk()

    def _route(self, bit, sink, pin):
        src = self.driver.get(bit)
        if src is not None:
            src_type, sink_type = self.cells[src[0]]["type"], self.cells[sink]["type"]
            for d_type, d_pin, s_type, s_pin in DEDICATED:
                if (d_type in (None, src_type) and d_pin in (None, src[1])
                        and s_type == sink_type and s_pin == pin):
                    return 0.0, 0
        return self.routing_ns, 1

    def _inputs(self, bit):
        """(input bit, pin delay incl. routing, routed) of the combinational driver of bit."""
        name, out_pin = self.driver[bit]
        cell = self.cells[name]
        delay = LOGIC_NS[cell["type"]]
        for pin, direction in cell["port_directions"].items():
            if direction != "input":
                continue
            d = delay(pin, out_pin)
            if d is None:
                continue
            for b in cell["connections"][pin]:
                if isinstance(b, int):
                    r, routed = self._route(b, name, pin)
                    yield b, d + r, routed

    def _walk(self):
        # Iterative depth-first search: the carry chains are hundreds of cells deep.
        on_stack = set()
        for root in self.driver:
            stack = [root]
            while stack:
                bit = stack[-1]
                if bit in self.arrival:
                    stack.pop()
                    continue
                src = self.driver.get(bit)
                if src is None or self.cells[src[0]]["type"] not in LOGIC_NS:
                    t = CLK_TO_Q_NS.get(self.cells[src[0]]["type"], 0.0) if src else 0.0
                    self.arrival[bit] = (t, None, 0)
                    stack.pop()
                    continue
                pending = [b for b, _, _ in self._inputs(bit) if b not in self.arrival]
                if pending and bit not in on_stack:
                    on_stack.add(bit)
                    for b in pending:
                        if b in on_stack:
                            raise NetlistError(f"combinational loop through {self.label(b)}")
                    stack.extend(pending)
                    continue
                if pending:
                    raise NetlistError(f"combinational loop through {self.label(bit)}")
                best = (0.0, None, 0)
                for b, d, routed in self._inputs(bit):
                    t = self.arrival[b][0] + d
                    if t > best[0]:
                        best = (t, b, self.arrival[b][2] + routed)
                on_stack.discard(bit)
                self.arrival[bit] = best
                stack.pop()

    def label(self, bit):
        if bit in self.names:
            return f"{self.names[bit][0]}[{self.names[bit][1]}]"
        if bit in self.driver:
            return f"({self.cells[self.driver[bit][0]]['type']} {self.driver[bit][0]})"
        return f"(net {bit})"

    def start(self, bit):
        """The path's start point: the register or block-RAM output it comes from."""
        while self.arrival.get(bit, (0.0, None))[1] is not None:
            bit = self.arrival[bit][1]
        return bit

    def endpoints(self):
        """{endpoint group: (ns, routed nets, the endpoint's input bit)}, worst path each."""
        worst = {}
        for name, cell in self.cells.items():
            kind = cell["type"]
            if kind in LOGIC_NS and kind != "TRELLIS_DPR16X4":
                continue
            for pin, direction in cell["port_directions"].items():
                if direction != "input" or pin in CLOCK_PINS:
                    continue
                if kind == "TRELLIS_DPR16X4" and pin.startswith("RAD"):
                    continue
                if kind == "TRELLIS_FF":
                    q = cell["connections"]["Q"][0]
                    group = self.names.get(q, (name, 0))[0]
                else:
                    group = f"{re.sub(r'[0-9]+$', '', pin)} of {kind} {name}"
                for bit in cell["connections"][pin]:
                    if not isinstance(bit, int):
                        continue
                    r, routed = self._route(bit, name, pin)
                    t, _, hops = self.arrival.get(bit, (0.0, None, 0))
                    total = t + r + SETUP_NS.get(kind, 0.0)
                    if group not in worst or total > worst[group][0]:
                        worst[group] = (total, hops + routed, bit)
        return worst


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/path_estimate.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("netlist", help="the Yosys JSON netlist of an ECP5 build (top.json)")
    ap.add_argument("--module", help="module to analyse (default: the netlist's top)")
    ap.add_argument("--routing", type=float, default=1.0, metavar="NS",
                    help="delay of each routed net (default 1.0 ns)")
    ap.add_argument("--top", type=int, default=30, metavar="N",
                    help="endpoint groups to list (default 30)")
    ap.add_argument("--match", metavar="REGEX",
                    help="list only endpoint groups whose name matches, with their ranks")
    ap.add_argument("--trace", type=int, metavar="RANK",
                    help="also print the path of the endpoint group of this rank, net by net")
    args = ap.parse_args(argv)
    try:
        est = Estimate(*load_module(args.netlist, args.module), routing_ns=args.routing)
    except NetlistError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ranked = sorted(est.endpoints().items(), key=lambda kv: -kv[1][0])
    print(f"{len(ranked)} endpoint groups; estimate with {args.routing:g} ns per routed net")
    print(f"{'rank':>5s} {'ns':>6s} {'routed':>6s}  endpoint  <-  start")
    shown = 0
    for rank, (group, (t, hops, bit)) in enumerate(ranked, 1):
        if shown >= args.top:
            break
        if args.match and not re.search(args.match, group):
            continue
        print(f"{rank:5d} {t:6.2f} {hops:6d}  {group}  <-  {est.label(est.start(bit))}")
        shown += 1
    if args.trace:
        if not 1 <= args.trace <= len(ranked):
            print(f"error: --trace must be a rank from 1 to {len(ranked)}", file=sys.stderr)
            return 2
        group, (t, _, bit) = ranked[args.trace - 1]
        print(f"path of rank {args.trace} ({group}), from its end:")
        while bit is not None:
            src = est.driver.get(bit)
            kind = est.cells[src[0]]["type"] if src else "input"
            print(f"  {est.arrival.get(bit, (0.0,))[0]:6.2f}  {kind:10s} {est.label(bit)}")
            bit = est.arrival.get(bit, (0.0, None))[1]
    for ns in THRESHOLDS_NS:
        n = sum(1 for _, (t, _, _) in ranked if t > ns)
        print(f"over {ns:g} ns ({1000 / ns:.1f} MHz): {n} endpoint groups")
    return 0


if __name__ == "__main__":
    from specbp_hw.cli import run
    run(main)
