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
    for name in ("gen-tiny-fp32-cache", "gen-tiny-fp32-nocache", "gen-tiny-int8-cache"):
        assert cases[name]["tokens"] == 40 and positive(cases[name]["ms_per_token"])
    assert set(report["speedups"]) == {"train-tiny bf16 over fp32", "train-tiny auto over the better of fp32 and bf16",
                                       "gen-tiny-fp32 cache over recompute", "gen-tiny int8 over fp32"}
    assert all(map(positive, report["speedups"].values()))
    assert len(report["load_average_before"]) == 3


def test_isolated_case_reports_its_own_process(tmp_path):
    cfg = bench.BenchConfig(seconds=0.05, threads=1, device="cpu")
    result = bench.run_isolated("peak-fp32", cfg)
    assert "error" not in result, result.get("error")
    assert result["kind"] == "peak" and positive(result["gflops"]) and positive(result["peak_rss_mb"])


@pytest.mark.parametrize("name", ["train-huge-fp32", "peak-auto", "peak-int8", "train-tiny-int8-cache", "train-tiny-int8", "gen-tiny-fp32", "train-tiny-fp32-cache", "gen-tiny-auto-cache", "bogus"])
def test_malformed_case_names_are_refused_with_the_valid_forms(name):
    with pytest.raises(ConfigError, match="expected peak-DTYPE"):
        bench.parse_case(name)


def test_targets_compare_measurements_with_their_aims():
    summaries = {"train-medium-bf16": {"mfu": 0.6}}
    rows = bench.targets(summaries, {"train-medium bf16 over fp32": 1.5, "gen-medium-fp32 cache over recompute": 9.0})
    assert [(r["aim"], r["met"]) for r in rows] == [(2.2, False), (0.55, True), (5.0, True)]


def test_int8_loss_change_compares_a_trained_checkpoint_in_float32_and_int8(pretrain_args, tmp_path):
    import train

    train.main(pretrain_args(tmp_path / "run", n_embd=32))
    result = bench.int8_loss_change(tmp_path / "run" / "ckpt.pt")
    assert (result["n_layer"], result["n_embd"]) == (1, 32) and result["val_tokens"] > 0
    assert result["change"] == result["val_loss_int8"] - result["val_loss_fp32"]
    assert 0 < abs(result["change"]) < 0.05 and positive(result["seconds_int8"])  # int8 changes the loss, a little


def test_int8_loss_refuses_a_checkpoint_not_from_train_py(tiny_gpt, tmp_path):
    import gpt

    gpt.save_checkpoint(tmp_path / "ckpt.pt", tiny_gpt(vocab_size=105), gpt.CharTokenizer.from_text(""))
    with pytest.raises(ConfigError, match="not written by train.py"):
        bench.int8_loss_change(tmp_path / "ckpt.pt")
