"""Every timing endpoint of a routed build, from nextpnr's detailed JSON report.

nextpnr's reports name one critical path per clock. With ``--detailed-timing-report`` (which
:mod:`specbp_hw.build` passes) its JSON report also holds, for every timing endpoint (a
flip-flop's input, a block RAM's or DSP block's input pin), the arrival time of its latest
path after routing, from the launching clock edge (``detailed_net_timings``). Grouped by
register (the flip-flops Yosys made from one signal) or by block and port kind, they show the
whole tail a clock must clear: :func:`endpoint_groups` here, the build's report
(``endpoints``) and ``benchmarks/timing_tail.py``.

A flip-flop's data input has no setup time in nextpnr's ECP5 model; a block RAM's or DSP
block's input has one, so such an endpoint misses its clock a little before its arrival
reaches the period: a count of endpoints over the period is a lower bound there.
"""

import re

__all__ = ["group_of", "endpoint_groups", "summary"]

# Yosys names a flip-flop it made from a signal "<signal>_TRELLIS_FF_Q[_i]" (ECP5) or
# "<signal>_SB_DFF<kind>_Q[_i]" (iCE40), and a net or cell it made without a name of its own
# after the connections it came from, so such a name starts with the signal whose logic it
# belongs to: "<signal>_SB_DFFSR_Q_2_D_SB_LUT4_O_I3_SB_LUT4_O_I1...". nextpnr's iCE40 packer
# names a logic cell that holds a flip-flop after its LUT or flip-flop, with "_LC" or "_DFFLC"
# appended, and a block RAM "<memory>.<i>.<j>_RAM".
_FF = re.compile(r"_(TRELLIS_FF|SB_DFF[A-Z]*)_Q(_\d+)?")
_INDEX = re.compile(r"(\.\d+)+(_RAM)?$")          # a memory's blocks: "<memory>.<i>.<j>"
_PORT_BIT = re.compile(r"_?\d+$")


def group_of(cell, port):
    """The endpoint's group: the signal a flip-flop's name starts with, or ``"<block> <port
    kind>"`` (a block named after a signal: that signal)."""
    m = _FF.search(cell)
    if m and (m.end() == len(cell) or cell.endswith(("_LC", "_DFFLC"))):
        return cell[:m.start()]
    block = cell[:m.start()] if m else _INDEX.sub("", cell)
    return f"{block} {_PORT_BIT.sub('', port)}"


def endpoint_groups(report, clock):
    """``{group: [arrival ns of each endpoint]}`` of the paths launched and captured by
    ``clock`` (a net name of the report's ``fmax``) at its rising edges, from a parsed nextpnr
    JSON report; None if the report has no per-endpoint timing."""
    nets = report.get("detailed_net_timings")
    if nets is None:
        return None
    event = f"posedge {clock}"
    groups = {}
    for net in nets:
        if net.get("event") != event:
            continue
        for ep in net.get("endpoints", ()):
            if ep.get("event") == event:
                groups.setdefault(group_of(ep["cell"], ep["port"]), []).append(
                    float(ep["delay"][1]))
    return groups


def summary(groups, period_ns, worst=5):
    """The build report's ``endpoints``: ``total``, ``over`` (endpoints whose arrival exceeds
    ``period_ns``), ``groups_over``, and ``worst``: up to ``worst`` groups over the period,
    latest first (``group``, ``arrival_ns``, ``over``)."""
    over = {g: sum(1 for t in ts if t > period_ns) for g, ts in groups.items()}
    late = sorted((g for g in groups if over[g]), key=lambda g: -max(groups[g]))
    return {
        "total": sum(len(ts) for ts in groups.values()),
        "over": sum(over.values()),
        "groups_over": len(late),
        "worst": [{"group": g, "arrival_ns": round(max(groups[g]), 2), "over": over[g]}
                  for g in late[:worst]],
    }
