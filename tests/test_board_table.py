"""benchmarks/board_table.py: its board entries and its rows, without running a tool."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "board_table", Path(__file__).parent.parent / "benchmarks" / "board_table.py")
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def test_entries_name_a_board_and_optionally_a_preset_and_clock():
    assert table.parse_entry("ulx3s-85f") == ("ulx3s-85f", None, None, "ulx3s-85f")
    assert table.parse_entry("ulx3s-85f:paper-skip") == \
        ("ulx3s-85f", "paper-skip", None, "ulx3s-85f-paper-skip")
    assert table.parse_entry("ulx3s-85f:paper-skip@100") == \
        ("ulx3s-85f", "paper-skip", 100.0, "ulx3s-85f-paper-skip-100")


@pytest.mark.parametrize("entry", ["", ":paper", "ulx3s-85f:", "ulx3s-85f:@100",
                                   "ulx3s-85f:paper@", "ulx3s-85f:paper@fast",
                                   "ulx3s-85f:paper@0"])
def test_bad_entries_are_refused_in_one_line(entry):
    with pytest.raises(SystemExit, match="bad board entry"):
        table.parse_entry(entry)


def test_a_bad_entry_is_refused_before_any_build(monkeypatch, capsys):
    built = []
    monkeypatch.setattr(table, "build_board", lambda *a: built.append(a))
    monkeypatch.setattr("sys.argv", ["board_table.py", "--boards", "icebreaker", "x:"])
    with pytest.raises(SystemExit, match="bad board entry 'x:'"):
        table.main()
    assert built == []


def test_a_row_holds_the_report_and_a_failed_build_its_error():
    r = {"board": "b", "device": "LFE5U-85F", "preset": "paper-skip", "layers": [784, 16, 16, 10],
         "inputs": 1, "lanes": 16, "top": "link",
         "utilization": {"logic": {"used": 10, "available": 100},
                         "bram": {"used": 2, "available": 8}},
         "fmax_mhz": 101.54, "target_mhz": 100.0, "timing_met": True,
         "cycles_per_sample": {"serial": 10, "speculative": 6, "pipelined": 7.5},
         "projected_epoch_seconds": {"serial": 0.3261, "speculative": 0.19, "pipelined": 0.2},
         "build_seconds": {"total": 90}}
    cells = [c.strip() for c in table.row(r).split("|")[1:-1]]
    assert cells == ["b", "LFE5U-85F", "paper-skip (784-16-16-10, 1x16)", "link", "10 / 100",
                     "-", "2 / 8", "-", "101.5 / 100", "10 / 6 / 7.5",
                     "0.326 / 0.190 / 0.200", "1.5"]
    r.update(fmax_mhz=92.06, timing_met=False)
    assert "92.1 (fails) / 100" in table.row(r)
    failed = table.row({"board": "b", "error": "region a|b full"})
    assert failed.startswith("| b | build failed: region a\\|b full |")
    assert failed.count("|") == 14
