"""Build flow: boards, fit checks, PLL settings, the command line; slow: real builds."""

import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import *

from specbp_hw import build as build_mod
from specbp_hw.boards import BOARDS_DIR, DEVICES, get_board, load_boards
from specbp_hw.fit import (bram_blocks, core_memories, dsps_per_multiplier, estimate,
                           fit_problems, link_memories, lr_in_logic)
from specbp_hw.presets import PRESETS, core_params
from specbp_hw.replica import YOSYS_KEEP
from specbp_hw.synth_top import ecp5_pll, ice40_pll
from specbp_hw.toolchain import ToolError, yowasp_command

BOARDS = ("icebreaker", "orangecrab-25f", "ulx3s-25f", "ulx3s-85f")


def run_cli(capsys, *argv):
    """Run the command line; return (exit status, stdout, stderr)."""
    try:
        status = build_mod.main(list(argv))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    if isinstance(status, str):       # SystemExit("error: ...") prints its message
        err, status = err + status + "\n", 1
    return status, out, err


# ---- boards ------------------------------------------------------------------------------

def test_boards_load_and_their_presets_fit():
    boards = load_boards()
    assert tuple(boards) == BOARDS
    for board in boards.values():
        assert board.platform_class().device == board.device.name
        # Every board's preset fits alone (the wrapper) and with the host link.
        assert fit_problems(core_params(board.preset), board.device) == [], board.name
        assert fit_problems(core_params(board.preset), board.device, link=True) == [], \
            board.name


def test_board_file_placer(tmp_path):
    # A board file may choose nextpnr's placer; heap (nextpnr's default) without one.
    text = (BOARDS_DIR / "ulx3s-25f.toml").read_text()
    lines = [x for x in text.splitlines() if not x.startswith("placer")]
    (tmp_path / "plain.toml").write_text("\n".join(lines) + "\n")
    (tmp_path / "fast.toml").write_text("\n".join(lines) + '\nplacer = "static"\n')
    boards = load_boards(tmp_path)
    assert (boards["plain"].placer, boards["fast"].placer) == ("heap", "static")
    (tmp_path / "bad.toml").write_text("\n".join(lines) + '\nplacer = "sa"\n')
    with pytest.raises(ValueError, match=r"bad.toml: unknown placer 'sa'; known: heap, static$"):
        load_boards(tmp_path)


def test_unknown_board_lists_known_boards():
    with pytest.raises(ValueError, match=r"Unknown board 'nope'; known boards: "
                                         r"icebreaker, orangecrab-25f, ulx3s-25f, ulx3s-85f$"):
        get_board("nope")


# ---- fit check ---------------------------------------------------------------------------

def test_memory_mapping_matches_yosys_on_the_paper_core():
    # Measured: Yosys 0.70 synth_ecp5 of the paper preset (see docs/BUILD.md): 15 DP16KD for
    # the weights (once, on both ports), 32 for the accumulators, 5 stash pixels, 1 input
    # buffer, 8 stash activations, 1 softmax table; 50 MULT18X18D. (Until commit 8269e91 the
    # weights were stored twice, 30, and the stash activations in distributed RAM: 69.)
    dev = DEVICES["LFE5U-85F"]
    blocks = {m.name: bram_blocks(m, dev) for m in core_memories(core_params("paper"))}
    assert blocks == {"weights": 15, "grads": 32, "xbuf": 1, "stash_x": 5, "stash_act": 8,
                      "softmax_table0": 1}
    est = estimate(core_params("paper"), dev)
    assert (est.bram, est.dsps) == (62, 50)


def test_ice40_stores_a_memory_once_per_read_port():
    dev = DEVICES["iCE40UP5K"]
    weights = next(m for m in core_memories(core_params("pool7")) if m.name == "weights")
    assert weights.read_ports == 2
    # 16-bit words in 256 x 16 blocks, two copies.
    assert bram_blocks(weights, dev) == 2 * -(-weights.depth // 256)


def test_fit_refuses_with_what_and_which_preset():
    dev = DEVICES["LFE5U-25F"]
    problems = fit_problems(core_params("paper-x4"), dev)
    assert any(p.startswith("block RAM: 140 DP16KD needed") for p in problems)
    assert any(p.startswith("multipliers:") for p in problems)
    assert build_mod.suggest_preset(dev) == "h8-n8-skip"
    assert build_mod.suggest_preset(DEVICES["LFE5U-85F"]) == "paper-x4"
    # The 16-bit pool7 alone (the widest datapath that fits); with the link, 9-bit pool7-q9.
    assert build_mod.suggest_preset(DEVICES["iCE40UP5K"]) == "pool7"
    assert build_mod.suggest_preset(DEVICES["iCE40UP5K"], link=True) == "pool7-q9"


def test_icebreaker_link_needs_the_narrow_preset(capsys, no_build):
    # The estimate scales the iCE40 core with the datapath width (measured 5,131 logic cells
    # for pool7-q9 with the link, its core alone 3,551; 16-bit pool7 needs 6,578).
    dev = DEVICES["iCE40UP5K"]
    assert fit_problems(core_params("pool7-q9"), dev, link=True) == []
    assert estimate(core_params("pool7-q9"), dev, link=True).luts <= 5280
    status, out, err = run_cli(capsys, "--board", "icebreaker", "--preset", "pool7")
    assert status != 0 and out == ""
    assert err == ("error: preset 'pool7' does not fit icebreaker (iCE40UP5K): logic: about "
                   "6543 logic cells needed (estimate), 5280 available; preset 'pool7-q9' "
                   "fits\n")


def test_link_refusal_names_the_core_alone(capsys, no_build, monkeypatch):
    # Without the narrow preset no preset fits the iCE40 with the link, but pool7 alone does.
    monkeypatch.setattr(build_mod, "suggest_preset", lambda *args, **kwargs: None)
    status, out, err = run_cli(capsys, "--board", "icebreaker", "--preset", "pool7")
    assert status != 0 and err.endswith("; no preset fits this part with the host link; the "
                                        "core alone fits (--top core)\n")


@pytest.mark.parametrize("a, b, family, dsps", [
    # As measured: softmax p x R (17 x 18) and t x LOG2E (16 x 15), a 16 x 16 MAC.
    (17, 18, "ecp5", 1), (17, 18, "ice40", 2), (16, 15, "ice40", 1), (16, 16, "ice40", 1),
    (36, 16, "ecp5", 2), (4, 6, "ice40", 0), (1, 10, "ecp5", 0),
])
def test_dsps_per_multiplier(a, b, family, dsps):
    dev = DEVICES["LFE5U-85F" if family == "ecp5" else "iCE40UP5K"]
    assert dsps_per_multiplier(a, b, dev) == dsps


def test_ice40_estimate_matches_the_measured_pool7_synthesis():
    # Measured (Yosys 0.70 synth_ice40 -dsp, learning-rate product in logic): 15 SB_RAM40_4K,
    # 5 SB_MAC16. The estimate counts one EBR more: the stash's 588 x 9-bit pixel values take
    # 3 EBR in any one configuration, and Yosys packs them into 2 with the bit write masks.
    est = estimate(core_params("pool7"), DEVICES["iCE40UP5K"], lr_in_logic=True)
    assert (est.bram, est.dsps) == (15 + 1, 5)
    # With the host link and the product in a DSP: 23 SB_RAM40_4K (the sample buffer, each
    # FIFO and the counter bank in EBR: 1 + 1 + 3 + 3), 6 SB_MAC16; again one EBR counted more.
    est = estimate(core_params("pool7"), DEVICES["iCE40UP5K"], link=True)
    assert (est.bram, est.dsps) == (23 + 1, 6)
    # pool7-q9 with the link (the iCEBreaker's bitstream): 20 SB_RAM40_4K, 5 SB_MAC16.
    est = estimate(core_params("pool7-q9"), DEVICES["iCE40UP5K"], link=True)
    assert (est.bram, est.dsps) == (20 + 1, 5)


def test_lr_multipliers_move_to_logic_only_when_dsps_are_short():
    dev = DEVICES["LFE5U-85F"]
    x4, paper = core_params("paper-x4"), core_params("paper")
    assert lr_in_logic(x4, dev) and not lr_in_logic(paper, dev)
    assert estimate(x4, dev, lr_in_logic=True).dsps == estimate(x4, dev).dsps - 64
    assert fit_problems(x4, dev, lr_mode="dsp") == ["multipliers: 212 DSPs needed, "
                                                    "156 available"]
    # In logic they fit the DSPs, and the LUTs since commits 337f6c2 and 1f36582 (measured at
    # fc50d21: 60,982 LUT4 + 2 x CCU2C in Yosys, 77,064 before).
    assert fit_problems(x4, dev) == []
    assert fit_problems(x4, dev, link=True) == []


@pytest.mark.parametrize("top", ["core", "link"])
def test_lr_products_in_logic_name_the_update_module_of_either_top(top, tmp_path, monkeypatch):
    # Yosys' `booth` selects the update engine's module by name and does nothing (silently)
    # if there is none: in the link's top the core sits one level deeper.
    scripts = []

    def fake_run(build_dir, name, **kwargs):
        scripts.append((build_dir / f"{name}.ys").read_text())
        (build_dir / f"{name}.stat.json").write_text('{"design": {"num_cells_by_type": '
                                                     '{"LUT4": 1}}}')
        return {"yosys": 1.0}

    monkeypatch.setattr(build_mod, "run_plan_commands", fake_run)
    build_mod.build(get_board("ulx3s-25f"), core_params("pool7"), preset="pool7", clock_mhz=50,
                    out_dir=tmp_path, pnr=False, top=top, lr_mode="logic", log=lambda m: None)
    (booth,) = [line for line in scripts[0].splitlines() if line.startswith("booth ")]
    module = booth.split()[1]
    assert module.endswith(".core.upd")
    assert f"module \\{module}\n" in (tmp_path / "top.il").read_text()


@pytest.mark.parametrize("board, placer, expect", [
    ("ulx3s-25f", None, get_board("ulx3s-25f").placer), ("ulx3s-25f", "heap", "heap"),
    ("ulx3s-25f", "static", "static"), ("icebreaker", None, get_board("icebreaker").placer),
    ("icebreaker", "static", "static"),
])
def test_placer_reaches_nextpnr(board, placer, expect, tmp_path, monkeypatch):
    # The tools are replaced: the test reads nextpnr's command line from the build script.
    monkeypatch.setattr(build_mod, "run_plan_commands", lambda *a, **k: {"yosys": 1.0})
    monkeypatch.setattr(build_mod, "_yosys_cells", lambda build_dir: {})
    b = get_board(board)
    r = build_mod.build(b, core_params("pool7"), preset="pool7", clock_mhz=b.clock_mhz,
                        out_dir=tmp_path, pnr=False, top="core", placer=placer,
                        log=lambda m: None)
    (line,) = [x for x in (tmp_path / "build_top.sh").read_text().splitlines()
               if x.startswith(f'"$NEXTPNR_{b.device.family.upper()}"')]
    assert f" --placer {expect} " in line and r["placer"] == expect
    with pytest.raises(build_mod.BuildError, match="unknown placer 'sa'; choose from heap, "
                                                   "static$"):
        build_mod.build(b, core_params("pool7"), preset="pool7", clock_mhz=b.clock_mhz,
                        out_dir=tmp_path, pnr=False, top="core", placer="sa",
                        log=lambda m: None)


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if it would start the tools."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fit check should have refused before building")
    monkeypatch.setattr(build_mod, "build", refuse)


@pytest.mark.parametrize("board, extra, problem, hint", [
    ("icebreaker", [], "block RAM: 347 EBR needed", "preset 'pool7-q9' fits"),
    ("orangecrab-25f", [], "block RAM: 140 DP16KD needed", "preset 'h8-n8-skip' fits"),
    ("ulx3s-25f", [], "block RAM: 141 DP16KD needed", "preset 'h8-n8-skip' fits"),
    ("ulx3s-85f", ["--lr-multipliers", "dsp"], "multipliers: 212 DSPs needed, 156 available",
     "preset 'paper-x2-skip' fits"),
])
def test_cli_refuses_a_preset_too_big_in_one_line(capsys, no_build, board, extra, problem,
                                                   hint):
    status, out, err = run_cli(capsys, "--board", board, "--preset", "paper-x4", *extra)
    assert status != 0 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: preset 'paper-x4' does not fit {board} (")
    assert problem in err and err.endswith(f"; {hint}\n")


# ---- command line ------------------------------------------------------------------------

def test_cli_unknown_board(capsys, no_build):
    status, out, err = run_cli(capsys, "--board", "nope")
    assert status != 0
    assert err == ("error: Unknown board 'nope'; known boards: icebreaker, orangecrab-25f, "
                   "ulx3s-25f, ulx3s-85f\n")


@pytest.mark.parametrize("argv, message", [
    (["--board", "icebreaker", "--preset", "huge"], "error: Unknown preset 'huge'"),
    (["--board", "ulx3s-85f", "--clock", "0"], "error: --clock must be a frequency in MHz"),
    (["--preset", "paper"], "error: --board is required"),
    (["--board", "icebreaker", "--baud", "20000000"],
     "error: 20000000 baud cannot be made from a 24 MHz clock (at least 4 cycles a bit, "
     "within 2 %); choose another --baud"),
    (["--board", "ulx3s-85f", "--baud", "0"], "error: --baud must be a positive rate, not 0"),
    (["--board", "orangecrab-25f", "--baud", "1000000"],
     "error: --baud sets the host link's UART, and this build's top is the core alone "
     "(orangecrab-25f: --top core)"),
    (["--board", "ulx3s-85f", "--top", "core", "--baud", "1000000"],
     "error: --baud sets the host link's UART"),
])
def test_cli_bad_values_one_line(capsys, no_build, argv, message):
    status, out, err = run_cli(capsys, *argv)
    assert status != 0
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_bad_argument_types(capsys, no_build):
    status, _, err = run_cli(capsys, "--board", "ulx3s-85f", "--clock", "fast")
    assert status == 2 and "invalid float value: 'fast'" in err
    status, _, err = run_cli(capsys, "--board", "ulx3s-85f", "--lr-multipliers", "lut")
    assert status == 2 and "invalid choice" in err
    status, _, err = run_cli(capsys, "--board", "ulx3s-85f", "--placer", "sa")
    assert status == 2 and "invalid choice: 'sa'" in err


def test_cli_list(capsys):
    status, out, err = run_cli(capsys, "--list")
    assert status == 0 and err == ""
    lines = out.splitlines()
    for board in load_boards().values():
        row = next(line for line in lines if line.startswith(board.name + " "))
        assert board.device.name in row and board.preset in row
        assert row.split()[3] == build_mod.resolve_top(board, "auto")
    assert all(name in lines[-1] for name in PRESETS)


def test_cli_verilog_export(capsys, tmp_path):
    path = tmp_path / "core.v"
    status, out, err = run_cli(capsys, "--verilog", str(path), "--preset", "pool7")
    assert status == 0
    text = path.read_text()
    assert "module specbp_training_core" in text
    for port in ("i__valid", "o__ready", "schedule", "rb_data", "update_cycles"):
        assert port in text


def test_top_is_the_host_link_where_the_board_has_a_uart():
    assert {name: build_mod.resolve_top(b, "auto") for name, b in load_boards().items()} == {
        "icebreaker": "link", "orangecrab-25f": "core", "ulx3s-25f": "link",
        "ulx3s-85f": "link"}
    assert build_mod.resolve_top(get_board("ulx3s-85f"), "core") == "core"
    with pytest.raises(build_mod.BuildError, match="unknown top 'uart'; choose from auto, "
                                                   "link, core$"):
        build_mod.resolve_top(get_board("ulx3s-85f"), "uart")


def test_cli_link_on_a_board_without_uart_is_one_line(capsys, no_build):
    status, out, err = run_cli(capsys, "--board", "orangecrab-25f", "--top", "link")
    assert status != 0 and out == ""
    assert err == ("error: orangecrab-25f has no UART resource in its amaranth-boards platform "
                   "(OrangeCrabR0_2_25FPlatform), so no host link; build the core alone with "
                   "--top core\n")


def test_link_adds_its_memories_to_the_fit_check():
    # The sample buffer (784 x 8 bits: one DP16KD), two 16-entry FIFOs and the counter bank
    # (distributed RAM).
    dev = DEVICES["LFE5U-85F"]
    params = core_params("paper")
    blocks = {m.name: (m.width, m.depth, bram_blocks(m, dev)) for m in link_memories(params)}
    assert blocks == {"link sample buffer": (8, 784, 1), "link receive FIFO": (8, 16, 0),
                      "link result FIFO": (34, 16, 0), "link counters": (48, 8, 0)}
    alone, linked = estimate(params, dev), estimate(params, dev, link=True)
    assert linked.bram == alone.bram + 1 and linked.dsps == alone.dsps
    assert linked.luts > alone.luts and linked.ffs > alone.ffs


def _fake_synthesis(build_dir, name):
    """What a replaced Yosys run leaves: its statistics; its times."""
    (build_dir / f"{name}.stat.json").write_text('{"design": {"num_cells_by_type": '
                                                 '{"LUT4": 1}}}')
    return {"yosys": 1.0}


def test_abc9_crash_falls_back_to_the_classic_abc(tmp_path, monkeypatch):
    # Yosys 0.70's ABC9 crashes on some netlists (docs/BUILD.md); `auto` then synthesises again
    # with the classic ABC. The tools are replaced here: the first Yosys run "crashes".
    scripts = []

    def fake_run(build_dir, name, **kwargs):
        script = (build_dir / f"{name}.ys").read_text()
        scripts.append(script)
        if "abc -lut" not in script:
            raise build_mod.ToolError("yosys failed (exit 1) after 41 s: ERROR: Assert "
                                      "`GetSize(conn.first) == GetSize(conn.second)' failed in "
                                      "kernel/rtlil.cc:3091.")
        return _fake_synthesis(build_dir, name)

    monkeypatch.setattr(build_mod, "run_plan_commands", fake_run)
    board, params = get_board("ulx3s-25f"), core_params("pool7")
    r = build_mod.build(board, params, preset="pool7", clock_mhz=50, out_dir=tmp_path,
                        pnr=False, top="core", log=lambda msg: None)
    assert r["lut_mapping"] == "abc (ABC9 crashed)" and len(scripts) == 2
    assert "synth_ecp5 -run map_luts: -top top" in scripts[0]
    # Both runs hide the array elements' wire names (`x[i]` beside `x`) and keep the
    # replicated registers apart before synthesis, and flatten before the LUT mapping.
    for script in scripts:
        assert script.index("rename -hide w:*]") < script.index("synth_ecp5")
        assert script.index(build_mod._FSM_ONE_HOT) < script.index("synth_ecp5")
        assert script.index(YOSYS_KEEP) < script.index("synth_ecp5 -run :map_luts -top top")
        assert (script.index("synth_ecp5 -run :map_luts -top top")
                < script.index("\nflatten\n") < script.index("stat -json"))
    for step in ("abc -lut 4:7", "synth_ecp5 -run map_cells: -top top"):
        assert step in scripts[1] and step not in scripts[0]
    assert "yosys (ABC9, crashed)" in r["build_seconds"]
    # Asked for ABC9 only, the crash is the error.
    with pytest.raises(build_mod.ToolError, match="GetSize"):
        build_mod.build(board, params, preset="pool7", clock_mhz=50, out_dir=tmp_path,
                        pnr=False, top="core", lut_mapping="abc9", log=lambda msg: None)


def test_cli_lut_mapping_is_for_ecp5_only(capsys, no_build):
    status, out, err = run_cli(capsys, "--board", "icebreaker", "--lut-mapping", "abc")
    assert status != 0 and out == ""
    assert err == "error: --lut-mapping applies to ECP5 builds only (icebreaker is ice40)\n"


def test_cli_dsp_registers_is_for_ecp5_only(capsys, no_build):
    status, out, err = run_cli(capsys, "--board", "icebreaker", "--dsp-registers", "logic")
    assert status != 0 and out == ""
    assert err == "error: --dsp-registers applies to ECP5 builds only (icebreaker is ice40)\n"


@pytest.mark.parametrize("dsp_registers, blocks", [("block", 3), ("logic", 0)])
def test_dsp_registers_choose_the_product_registers(tmp_path, monkeypatch, dsp_registers,
                                                    blocks):
    # The design handed to Yosys instantiates a MULT18X18D for each of pool7's three registered
    # products (the forward and backward engines' lane, the update's learning rate) with the
    # blocks' registers, none with registers in logic (Yosys infers those multipliers). The
    # tools are replaced: synthesis only writes its statistics.
    monkeypatch.setattr(build_mod, "run_plan_commands",
                        lambda build_dir, name, **kwargs: _fake_synthesis(build_dir, name))
    board, params = get_board("ulx3s-25f"), core_params("pool7")
    r = build_mod.build(board, params, preset="pool7", clock_mhz=50, out_dir=tmp_path,
                        pnr=False, top="core", dsp_registers=dsp_registers,
                        log=lambda msg: None)
    assert (tmp_path / "top.il").read_text().count("cell \\MULT18X18D ") == blocks
    assert r["dsp_registers"] == dsp_registers
    shown = any("--dsp-registers logic" in line for line in build_mod.format_report(r))
    assert shown == (dsp_registers == "logic")


def test_missing_tool_is_one_line():
    with pytest.raises(ToolError, match=r"^yowasp-frobnicate not found: install it with pip"):
        yowasp_command("frobnicate")


# ---- PLLs --------------------------------------------------------------------------------

@pytest.mark.parametrize("f_in, f_out", [(25e6, 100e6), (25e6, 125e6), (48e6, 100e6),
                                         (25e6, 40e6)])
def test_ecp5_pll(f_in, f_out):
    c = ecp5_pll(f_in, f_out)
    out = f_in / c["clki_div"] * c["clkfb_div"]
    assert out == c["f_out"] and abs(out - f_out) <= 0.01 * f_out
    assert 400e6 <= out * c["clkop_div"] <= 800e6
    assert f_in / c["clki_div"] >= 3.125e6


@pytest.mark.parametrize("f_out", [16e6, 24e6, 30e6, 48e6])
def test_ice40_pll(f_out):
    c = ice40_pll(12e6, f_out)
    pfd = 12e6 / (c["divr"] + 1)
    vco = pfd * (c["divf"] + 1)
    assert 10e6 <= pfd <= 133e6 and 533e6 <= vco <= 1066e6
    assert vco / (1 << c["divq"]) == c["f_out"]
    assert abs(c["f_out"] - f_out) <= 0.01 * f_out


def test_pll_out_of_range():
    with pytest.raises(ValueError, match="iCE40 PLL cannot make 5 MHz"):
        ice40_pll(12e6, 5e6)
    with pytest.raises(ValueError, match="ECP5 PLL cannot make 900 MHz"):
        ecp5_pll(25e6, 900e6)


# ---- projections -------------------------------------------------------------------------

def test_projections_follow_the_cycle_model():
    from specbp_hw.cycles import CycleModel
    params = core_params("paper")
    pr = build_mod.projections(params, 100.0)
    m = CycleModel(params)
    assert pr["epoch_cycles"]["serial"] == 60000 * m.serial_step
    assert pr["projected_epoch_seconds"]["serial"] == round(60000 * m.serial_step / 100e6, 5)
    assert pr["cycles_per_sample"]["pipelined"] < pr["cycles_per_sample"]["serial"]


# ---- real builds (slow) ------------------------------------------------------------------

@pytest.mark.slow
def test_build_small_preset_ecp5(capsys, tmp_path):
    report_path = tmp_path / "report.json"
    status, out, err = run_cli(capsys, "--board", "ulx3s-25f", "--preset", "pool7",
                               "--clock", "50", "--out", str(tmp_path / "build"),
                               "--json", str(report_path))
    assert status == 0, err
    r = json.loads(report_path.read_text())
    for key in ("board", "device", "fmax_mhz", "target_mhz", "utilization", "bitstream",
                "projected_epoch_seconds"):
        assert key in r
    assert (r["board"], r["device"], r["target_mhz"], r["top"]) == ("ulx3s-25f", "LFE5U-25F",
                                                                   50, "link")
    # With the array elements' names hidden, Yosys' ABC9 maps the LUTs (no fallback).
    assert r["lut_mapping"] == "abc9"
    assert r["fmax_mhz"] > 10
    for res in ("logic", "ff", "bram", "dsp"):
        assert 0 < r["utilization"][res]["used"] <= r["utilization"][res]["available"]
    # The fit check's block RAM and DSP counts are what the tools used.
    assert r["utilization"]["bram"]["used"] == r["estimate"]["bram"]
    assert r["utilization"]["dsp"]["used"] == r["estimate"]["dsps"]
    with open(r["bitstream"], "rb") as f:
        assert len(f.read()) > 10000
    for s in ("serial", "speculative", "pipelined"):
        assert r["projected_epoch_seconds"][s] == pytest.approx(
            r["epoch_cycles"][s] / (r["fmax_mhz"] * 1e6), rel=1e-3)


@pytest.mark.slow
def test_synthesis_with_the_classic_abc_ecp5(capsys, tmp_path):
    report_path = tmp_path / "report.json"
    status, out, err = run_cli(capsys, "--board", "ulx3s-25f", "--preset", "pool7", "--no-pnr",
                               "--lut-mapping", "abc", "--out", str(tmp_path / "build"),
                               "--json", str(report_path))
    assert status == 0, err
    r = json.loads(report_path.read_text())
    assert r["lut_mapping"] == "abc" and r["yosys_cells"]["LUT4"] > 1000
    assert r["yosys_cells"]["DP16KD"] == r["estimate"]["bram"]
    assert "abc -lut 4:7" in (tmp_path / "build" / "top.ys").read_text()


@pytest.mark.slow
def test_build_ice40_with_the_link(capsys, tmp_path):
    # The iCEBreaker's own build: pool7-q9 behind the host link, to a bitstream (97% of the
    # UP5K's logic cells). The report parses (utilisation, Fmax), and its block RAMs and DSPs
    # are the fit check's.
    report_path = tmp_path / "report.json"
    status, out, err = run_cli(capsys, "--board", "icebreaker",
                               "--out", str(tmp_path / "build"), "--json", str(report_path))
    assert status == 0, err
    r = json.loads(report_path.read_text())
    assert (r["device"], r["preset"], r["top"]) == ("iCE40UP5K", "pool7-q9", "link")
    assert "SB_PLL40_PAD" in r["yosys_cells"]
    for res in ("logic", "ff", "bram", "dsp"):
        assert 0 < r["utilization"][res]["used"] <= r["utilization"][res]["available"]
    assert r["fmax_mhz"] > 0 and r["target_mhz"] == 24
    with open(r["bitstream"], "rb") as f:
        assert len(f.read()) > 10000
    # The estimate's EBR count is an upper bound here (fit.bram_blocks): one more than Yosys'.
    assert r["utilization"]["bram"]["used"] == r["estimate"]["bram"] - 1
    assert r["utilization"]["dsp"]["used"] == r["estimate"]["dsps"]


@pytest.mark.parametrize("board", ["orangecrab-25f", "icebreaker"])
def test_core_wrapper_resets_the_core_from_a_global_buffer_on_ecp5(board):
    # As in the host link's top (tests/test_board_top.py): on an ECP5 the core's reset leaves
    # a DCCA onto a clock network; the iCE40's nextpnr promotes it by itself.
    from specbp_hw.synth_top import SynthWrapper
    b = get_board(board)
    platform = b.platform_class()()
    top = SynthWrapper(core_params("pool7"), 24e6, family=b.device.family,
                       f_in=platform.default_clk_frequency, led=b.led)
    il = platform.prepare(top, name="top").files["top.il"]
    assert ("cell \\DCCA " in il) == (b.device.family == "ecp5")


class _SixStates(Elaboratable):
    """A state machine of six states, each with its own output value."""

    def __init__(self):
        self.i = Signal()
        self.o = Signal(4)

    def elaborate(self, platform):
        m = Module()
        with m.FSM():
            for k in range(6):
                with m.State(f"S{k}"):
                    m.d.comb += self.o.eq((5 * k + 3) % 16)
                    with m.If(self.i):
                        m.next = f"S{(k + 1) % 6}"
        return m


def test_ecp5_flow_encodes_state_machines_one_hot(tmp_path):
    # With the flow's line, Yosys finds the state machine and re-encodes it one-hot: a
    # flip-flop per state. Without it, Amaranth's state register keeps its binary encoding
    # (fsm_detect passes over a register with an initial value): 3 flip-flops for 6 states.
    design = _SixStates()
    (tmp_path / "top.il").write_text(rtlil.convert(design, name="top",
                                                   ports=[design.i, design.o]))
    flops = {}
    for tag, line in (("one_hot", build_mod._FSM_ONE_HOT), ("binary", "")):
        (tmp_path / f"{tag}.ys").write_text(f"read_rtlil top.il\n{line}\nsynth_ecp5 -top top\n"
                                            f"tee -q -o {tag}.json stat -json\n")
        subprocess.run([yowasp_command("yosys"), "-q", "-l", f"{tag}.rpt", f"{tag}.ys"],
                       cwd=tmp_path, check=True, capture_output=True)
        cells = json.loads((tmp_path / f"{tag}.json").read_text())["design"]
        flops[tag] = cells["num_cells_by_type"]["TRELLIS_FF"]
    assert flops == {"one_hot": 6, "binary": 3}
