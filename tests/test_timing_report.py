"""Every timing endpoint from nextpnr's detailed report: specbp_hw.timing_report, the build
report's ``endpoints`` and benchmarks/timing_tail.py, on a small hand-made report."""

import importlib.util
import json
from pathlib import Path

from specbp_hw.build import format_report, parse_report
from specbp_hw.timing_report import endpoint_groups, group_of, summary

_spec = importlib.util.spec_from_file_location(
    "timing_tail", Path(__file__).parent.parent / "benchmarks" / "timing_tail.py")
tail = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tail)

CLK = "$glbnet$clk"
EV = f"posedge {CLK}"


def _net(name, endpoints, event=EV):
    return {"net": name, "driver": f"{name}_drv", "port": "F", "event": event, "sources": [],
            "endpoints": [{"cell": c, "port": p, "event": e, "delay": [t / 2, t]}
                          for c, p, t, e in endpoints]}


def _report(tmp_path, detailed=True):
    rep = {
        "fmax": {CLK: {"achieved": 90.0, "constraint": 100.0}},
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 100},
                        "TRELLIS_FF": {"used": 5, "available": 100}},
        "critical_paths": [],
    }
    if detailed:
        rep["detailed_net_timings"] = [
            _net("n1", [("core.acc_TRELLIS_FF_Q", "DI", 10.5, EV),
                        ("core.acc_TRELLIS_FF_Q_7", "DI", 9.0, EV),
                        ("core.mem.0.3", "ADB12", 11.2, EV)]),
            _net("n2", [("core.mem.1.0", "ADB3", 9.8, EV),
                        ("core.flag_TRELLIS_FF_Q", "CE", 10.1, EV),
                        ("core.acc_TRELLIS_FF_Q_2", "DI", 12.0, "<async>")]),
            _net("n3", [("core.x_TRELLIS_FF_Q", "DI", 30.0, EV)], event="<async>"),
        ]
    path = tmp_path / "top.report.json"
    path.write_text(json.dumps(rep))
    return path


def test_groups_are_registers_and_block_ports():
    assert group_of("board.core.fwd.wr_data4_TRELLIS_FF_Q_163", "DI") == "board.core.fwd.wr_data4"
    assert group_of("board.core.$signal_TRELLIS_FF_Q", "M") == "board.core.$signal"
    assert group_of("core.x_SB_DFFER_Q_3", "D") == "core.x"
    assert group_of("core.lab_slot_SB_DFFSR_Q_2_D_SB_LUT4_O_LC", "I1") == "core.lab_slot"
    assert group_of("board.core.weights.0.11", "ADB12") == "board.core.weights ADB"
    assert group_of("board.core.bwd.prod7_dsp", "A3") == "board.core.bwd.prod7_dsp A"


def test_ice40_logic_cells_group_by_the_signal_their_name_starts_with():
    # nextpnr's iCE40 packer names a logic cell after its LUT or flip-flop; Yosys names an
    # unnamed net after the connections it came from, starting with a named signal.
    assert group_of("board.core.fwd.w1_SB_DFF_Q_8_DFFLC", "I0") == "board.core.fwd.w1"
    assert group_of("board.core.upd.addr_SB_DFFSR_Q_7_DFFLC", "SR") == "board.core.upd.addr"
    assert group_of("board.fsm_state_SB_DFFESR_Q_4_D_SB_LUT4_O_I3_SB_LUT4_O_I1_SB_LUT4_I1_O_"
                    "SB_DFFSR_Q_D_SB_LUT4_O_LC", "I2") == "board.fsm_state"
    assert group_of("board.core.slot_of5_SB_DFFESR_Q_E_SB_DFFESR_E_DFFLC", "I0") \
        == "board.core.slot_of5"
    # block RAMs and DSP blocks keep the port kind (iCE40 ports: "WDATA_3")
    assert group_of("board.core.grads.0.2_RAM", "WADDR_4") == "board.core.grads WADDR"
    assert group_of("board.core.fwd.acc_SB_DFF_Q_3_D_SB_MAC16_O_DSP", "A12") \
        == "board.core.fwd.acc A"
    # a logic cell whose name names no flip-flop is a group of its own, per port kind
    assert group_of("board.core.fwd.last2_SB_LUT4_I3_LC", "I2") \
        == "board.core.fwd.last2_SB_LUT4_I3_LC I"


def test_endpoints_of_the_clock_only(tmp_path):
    rep = json.loads(_report(tmp_path).read_text())
    groups = endpoint_groups(rep, CLK)
    # The async-launched net and the async-captured endpoint are left out.
    assert groups == {"core.acc": [10.5, 9.0], "core.mem ADB": [11.2, 9.8],
                      "core.flag": [10.1]}
    s = summary(groups, 10.0)
    assert s == {"total": 5, "over": 3, "groups_over": 3,
                 "worst": [{"group": "core.mem ADB", "arrival_ns": 11.2, "over": 1},
                           {"group": "core.acc", "arrival_ns": 10.5, "over": 1},
                           {"group": "core.flag", "arrival_ns": 10.1, "over": 1}]}
    assert summary(groups, 12.0)["over"] == 0
    assert endpoint_groups({"fmax": {}}, CLK) is None


def test_the_build_report_counts_the_endpoints_that_miss(tmp_path):
    r = parse_report(_report(tmp_path), "ecp5", clock_mhz=100)
    assert r["endpoints"]["over"] == 3 and r["endpoints"]["groups_over"] == 3
    assert "endpoints" not in parse_report(_report(tmp_path, detailed=False), "ecp5")
    report = {"board": "b", "device": "d", "preset": "p", "layers": [4, 2], "inputs": 1,
              "lanes": 2, "top": "core", "timing_met": False, "target_mhz": 100, "seed": 1,
              "placer": "heap", "bitstream": "x.bit", "estimate": {"bram": 1, "dsps": 1,
                                                                   "luts": 1},
              "cycles_per_sample": {"serial": 1.0, "speculative": 1.0, "pipelined": 1.0},
              "build_seconds": {}, **r}
    lines = [x for x in format_report(report) if "timing endpoints" in x]
    assert lines == ["  3 of 5 timing endpoints miss the clock, in 3 registers or block ports; "
                     "the latest: core.mem ADB 11.20 ns, core.acc 10.50 ns, core.flag 10.10 ns"]


def test_timing_tail_lists_the_groups(tmp_path, capsys):
    assert tail.main([str(_report(tmp_path)), "--margin", "1.0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "5 endpoints in 3 groups, 3 endpoints in 3 groups over the period" in out[0]
    assert [line.split()[-1] for line in out[2:]] == ["ADB", "core.acc", "core.flag"]
    assert out[2].split()[:4] == ["11.20", "1", "1", "2"]      # over, near (9.8), of


def test_timing_tail_refuses_bad_reports(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert tail.main([str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert tail.main([str(_report(tmp_path, detailed=False))]) == 2
    assert "--detailed-timing-report" in capsys.readouterr().err
    assert tail.main([str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert tail.main([str(_report(tmp_path)), "--clock", "other"]) == 2
    assert "no clock 'other'" in capsys.readouterr().err
