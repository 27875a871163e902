"""Tests for bench.py: the quick path runs and its JSON holds the documented fields. Speed itself is
never asserted here; bench.py measures it."""
import json

import pytest

import bench
from train import ConfigError


def positive(value):
    return isinstance(value, (int, float)) and value > 0


def test_quick_bench_writes_every_documented_field(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--no-isolate", "--threads=1", f"--out={out}"])
    report = json.loads(out.read_text())

    assert report["config"]["rounds"] == 1 and report["machine"]["threads"] == 1
    assert set(report["peak_gflops"]) == {"fp32", "bf16"} and all(map(positive, report["peak_gflops"].values()))
    cases = report["cases"]
    assert set(cases) == set(bench.QUICK_CASES)
    for name, case in cases.items():
        assert "error" not in case, f"{name}: {case.get('error')}"
        assert positive(case["peak_rss_mb"]) and positive(case["tokens_per_s"] if case["kind"] != "peak" else case["gflops"])
    for name in ("train-tiny-fp32", "train-tiny-bf16", "train-tiny-auto"):
        for key in ("ms_per_iter", "tokens_per_iter", "gflops", "mfu", "params"):
            assert positive(cases[name][key]), (name, key)
    assert cases["train-tiny-auto"]["dtype_used"] in ("float32", "bfloat16") and "decision" in cases["train-tiny-auto"]
    for name in ("gen-tiny-fp32-cache", "gen-tiny-fp32-nocache"):
        assert cases[name]["tokens"] == 40 and positive(cases[name]["ms_per_token"])
    assert set(report["speedups"]) == {"train-tiny bf16 over fp32", "train-tiny auto over the better of fp32 and bf16",
                                       "gen-tiny-fp32 cache over recompute"}
    assert all(map(positive, report["speedups"].values()))
    assert len(report["load_average_before"]) == 3


def test_isolated_case_reports_its_own_process(tmp_path):
    cfg = bench.BenchConfig(seconds=0.05, threads=1, device="cpu")
    result = bench.run_isolated("peak-fp32", cfg)
    assert "error" not in result, result.get("error")
    assert result["kind"] == "peak" and positive(result["gflops"]) and positive(result["peak_rss_mb"])


@pytest.mark.parametrize("name", ["train-huge-fp32", "peak-auto", "gen-tiny-fp32", "train-tiny-fp32-cache", "gen-tiny-auto-cache", "bogus"])
def test_malformed_case_names_are_refused_with_the_valid_forms(name):
    with pytest.raises(ConfigError, match="expected peak-DTYPE"):
        bench.parse_case(name)


def test_targets_compare_measurements_with_their_aims():
    summaries = {"train-medium-bf16": {"mfu": 0.6}}
    rows = bench.targets(summaries, {"train-medium bf16 over fp32": 1.5, "gen-medium-fp32 cache over recompute": 9.0})
    assert [(r["aim"], r["met"]) for r in rows] == [(2.2, False), (0.55, True), (5.0, True)]
