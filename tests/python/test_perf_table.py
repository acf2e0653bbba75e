"""scripts/perf_table.py (docs/PERF.md's table from mla-bench --json files): targets met or
missed by the right factor, fp16 ratios against every bf16 run, exit status. No GPU needed."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("perf_table", ROOT / "scripts" / "perf_table.py")
perf_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perf_table)

# Times that meet every target of DESIGN.md section 5 (the H200 results of docs/PERF.md's
# twelfth session), with the FLOP and byte counts mla-bench printed for those cases.
MET = {
    "A": (304.6, 3.650722202e10, 1212416000),
    "B": (310.0, 1.460288881e11, 1225785344),
    "C": (480.7, 2.920577761e11, 1243611136),
    "D": (899.9, 5.841155523e11, 1279262720),
    "E": (19.5, 9126805504, 38027264),
    "F": (12.9, 1140850688, 38862848),
    "G": (144.1, 6.876494234e10, 302239616),
    "H": (184.9, 7.280610509e10, 620082176),
}


def write_run(path, dtype, times, all_passed=True):
    cases = []
    for name, (_, flops, nbytes) in MET.items():
        t = times[name]
        cases.append({"case": name, "time_us": t, "tflops": flops / (t * 1e-6) / 1e12,
                      "gb_per_s": nbytes / (t * 1e-6) / 1e9, "verify": "PASS"})
    run = {"tool": "mla-bench", "gpu": {"name": "test GPU"},
           "settings": {"dtype": dtype},
           "ceilings": {"copy_gb_per_s": 4257.0, "gemm_tflops": 794.0, "launch_floor_us": 4.1,
                        "gemm_fp16_tflops": 760.0 if dtype == "fp16" else None},
           "cases": cases, "all_passed": all_passed}
    path.write_text(json.dumps(run))
    return str(path)


def met_times():
    return {name: t for name, (t, _, _) in MET.items()}


def test_all_met_exits_zero(tmp_path, capsys):
    bf16 = write_run(tmp_path / "b.json", "bf16", met_times())
    fp16 = write_run(tmp_path / "f.json", "fp16", {k: v * 1.029 for k, v in met_times().items()})
    assert perf_table.main([bf16, "--fp16", fp16]) == 0
    out = capsys.readouterr().out
    assert "all targets met" in out
    assert "95.7% of bf16's" in out  # 760 / 794
    assert "| C (fp16" not in out and "| C | 494.6 | +2.9% | yes |" in out


def test_missed_target_names_the_factor(tmp_path, capsys):
    times = met_times()
    times["E"] = 38.8  # target <= 20 us: 1.94x
    times["C"] = 500.0  # 584.1 TFLOP/s against >= 600: 1.03x
    bf16 = write_run(tmp_path / "b.json", "bf16", times)
    assert perf_table.main([bf16]) == 1
    out = capsys.readouterr().out
    assert "| E | 38.8 |" in out and "no: 1.94x" in out
    assert "| C | 500.0 |" in out and "no: 1.03x" in out
    assert "| A | 304.6 |" in out and "3980 | >= 3950 GB/s | yes |" in out
    assert "some targets missed" in out


def test_fp16_over_three_percent_fails(tmp_path, capsys):
    bf16_1 = write_run(tmp_path / "b1.json", "bf16", met_times())
    bf16_2 = write_run(tmp_path / "b2.json", "bf16", {k: v * 1.01 for k, v in met_times().items()})
    slow = met_times()
    slow["D"] *= 1.035
    fp16 = write_run(tmp_path / "f.json", "fp16", slow)
    assert perf_table.main([bf16_1, bf16_2, "--fp16", fp16]) == 1
    out = capsys.readouterr().out
    assert "| D | 931.4 | +3.5% | +2.5% | no |" in out
    assert "| G | 144.1 | +0.0% | -1.0% | yes |" in out


def test_unverified_run_fails_and_wrong_dtype_is_rejected(tmp_path, capsys):
    bf16 = write_run(tmp_path / "b.json", "bf16", met_times(), all_passed=False)
    assert perf_table.main([bf16]) == 1
    assert "NOT all verified" in capsys.readouterr().out
    fp16 = write_run(tmp_path / "f.json", "fp16", met_times())
    assert perf_table.main([fp16]) == 2
    assert "is a fp16 run, given as bf16" in capsys.readouterr().err


def test_not_a_bench_file(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"tool": "other"}))
    assert perf_table.main([str(bad)]) == 2
    assert "not an mla-bench --json file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        perf_table.main([])  # argparse: at least one bf16 file
