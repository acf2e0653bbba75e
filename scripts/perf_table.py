#!/usr/bin/env python3
"""docs/PERF.md's table from mla-bench --json files: each case's time per run, against the
targets of DESIGN.md section 5, with the ceilings of every run; fp16 runs as ratios to the bf16
runs (target: within 3%).

    python3 scripts/perf_table.py bench_bf16_1.json bench_bf16_2.json --fp16 bench_fp16_1.json

(gpu_check.sh's bench stage writes bench_<dtype>_<run>.json.) Exit status 0 when every target
holds in every bf16 run and every fp16 case is within 3% of every bf16 run, 1 otherwise, 2 on
unreadable input. Standard library only.
"""
import argparse
import json
import sys

# DESIGN.md section 5: case -> (metric, comparison, bound). Only the default cases have targets.
TARGETS = {
    "A": ("gb_per_s", ">=", 3950.0),
    "B": ("time_us", "<=", 310.0),
    "C": ("tflops", ">=", 600.0),
    "D": ("tflops", ">=", 610.0),
    "E": ("time_us", "<=", 20.0),
    "F": ("time_us", "<=", 13.0),
    "G": ("time_us", "<=", 150.0),
    "H": ("time_us", "<=", 190.0),
}
UNITS = {"gb_per_s": "GB/s", "time_us": "us", "tflops": "TFLOP/s"}
FP16_LIMIT = 0.03  # fp16 time at most 3% above bf16's


def load(path):
    with open(path) as f:
        run = json.load(f)
    if run.get("tool") != "mla-bench" or "cases" not in run:
        raise ValueError(f"{path}: not an mla-bench --json file")
    return run


def target_text(name):
    metric, cmp, bound = TARGETS[name]
    return f"{cmp} {bound:g} {UNITS[metric]}"


def meets(case):
    """None without a target or a time; else whether the case meets it, and by what factor it
    misses (1.0 when met)."""
    name = case["case"]
    if name not in TARGETS or case.get("time_us") is None:
        return None
    metric, cmp, bound = TARGETS[name]
    value = case[metric]
    if cmp == ">=":
        return (value >= bound, bound / value if value > 0 else float("inf"))
    return (value <= bound, value / bound)


def ceilings_line(label, run):
    c = run["ceilings"]
    parts = [
        f"copy {c['copy_gb_per_s']:.0f} GB/s" if c.get("copy_gb_per_s") else "copy n/a",
        f"GEMM {c['gemm_tflops']:.1f} TFLOP/s" if c.get("gemm_tflops") else "GEMM n/a",
    ]
    if c.get("gemm_fp16_tflops") and c.get("gemm_tflops"):
        parts.append(f"fp16 GEMM {c['gemm_fp16_tflops']:.1f} "
                     f"({100 * c['gemm_fp16_tflops'] / c['gemm_tflops']:.1f}% of bf16's)")
    if c.get("launch_floor_us"):
        parts.append(f"launch floor {c['launch_floor_us']:.1f} us")
    verified = "all verified" if run.get("all_passed") else "NOT all verified"
    return f"{label} ({run['settings']['dtype']}, {run['gpu']['name']}): " + ", ".join(parts) + \
        f"; {verified}"


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bf16", nargs="+", help="mla-bench --json files of bf16 runs")
    ap.add_argument("--fp16", nargs="*", default=[], help="mla-bench --json files of fp16 runs")
    args = ap.parse_args(argv)
    try:
        bf16 = [load(p) for p in args.bf16]
        fp16 = [load(p) for p in args.fp16]
    except (OSError, ValueError) as e:
        print(f"perf_table: {e}", file=sys.stderr)
        return 2
    for label, runs, dtype in (("bf16", bf16, "bf16"), ("fp16", fp16, "fp16")):
        for path, run in zip(args.bf16 if label == "bf16" else args.fp16, runs):
            if run["settings"]["dtype"] != dtype:
                print(f"perf_table: {path} is a {run['settings']['dtype']} run, given as {dtype}",
                      file=sys.stderr)
                return 2

    ok = True
    for k, run in enumerate(bf16, 1):
        print(ceilings_line(f"bf16 run {k}", run))
        ok &= bool(run.get("all_passed"))
    for k, run in enumerate(fp16, 1):
        print(ceilings_line(f"fp16 run {k}", run))
        ok &= bool(run.get("all_passed"))
    print()

    names = [c["case"] for c in bf16[0]["cases"]]
    by_run = [{c["case"]: c for c in run["cases"]} for run in bf16]
    runs_head = " | ".join(f"run {k} us" for k in range(1, len(bf16) + 1))
    print(f"| case | {runs_head} | TFLOP/s | GB/s | target | met |")
    print("|---|" + "---|" * (len(bf16) + 4))
    for name in names:
        cases = [r.get(name) for r in by_run]
        times = " | ".join(fmt(c and c.get("time_us")) for c in cases)
        tflops = " / ".join(fmt(c and c.get("tflops")) for c in cases)
        gbs = " / ".join(fmt(c and c.get("gb_per_s"), 0) for c in cases)
        met = []
        for c in cases:
            m = meets(c) if c else None
            if m is None:
                met.append("-" if name not in TARGETS else "no result")
                ok &= name not in TARGETS
            elif m[0]:
                met.append("yes")
            else:
                met.append(f"no: {m[1]:.2f}x")
                ok = False
            if c and c.get("verify") not in (None, "PASS", "skipped"):
                met[-1] += f" ({c['verify']})"
        target = target_text(name) if name in TARGETS else "-"
        print(f"| {name} | {times} | {tflops} | {gbs} | {target} | {' / '.join(met)} |")

    if fp16:
        print()
        bf16_head = " | ".join(f"vs bf16 run {k}" for k in range(1, len(bf16) + 1))
        print(f"| case | fp16 us | {bf16_head} | within 3% |")
        print("|---|---|" + "---|" * (len(bf16) + 1))
        for k, run in enumerate(fp16, 1):
            for case in run["cases"]:
                name, t = case["case"], case.get("time_us")
                ratios, within = [], True
                for r in by_run:
                    base = r.get(name, {}).get("time_us")
                    if t is None or not base:
                        ratios.append("n/a")
                        within = False
                        continue
                    d = t / base - 1.0
                    ratios.append(f"{100 * d:+.1f}%")
                    within &= d <= FP16_LIMIT
                ok &= within
                label = name if len(fp16) == 1 else f"{name} (fp16 run {k})"
                print(f"| {label} | {fmt(t)} | {' | '.join(ratios)} | {'yes' if within else 'no'} |")
    print()
    print("all targets met" if ok else "some targets missed (or a run did not verify)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
