"""Tests for train.py: pretraining runs, their batches, evaluation and faults. One behaviour per test,
each able to fail. Runs use a tiny model (1 layer, 16 wide) on a small generated corpus (conftest.py).
"""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt
import train
import trainer
from train import TrainConfig
from trainer import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent


def train_losses(out_dir):
    return {r["step"]: r["train_loss"] for r in trainer.read_metrics(Path(out_dir) / "metrics.jsonl") if "train_loss" in r}


# ----------------------------------------------------------------------------------------------------
# Configuration files and the command line


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


def test_cli_turns_errors_into_one_line_without_traceback(capsys):
    with pytest.raises(SystemExit) as exit:
        trainer.cli(train.main, ["--n_layres=2"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert err == "error: command line: unknown key 'n_layres'; did you mean 'n_layer'?\n"


# ----------------------------------------------------------------------------------------------------
# Batches and evaluation


def test_a_time_budget_ends_the_run_early_with_the_schedule_completed(pretrain_args, tmp_path):
    summary = train.main(pretrain_args(tmp_path / "run", max_iters=1_000_000, eval_interval=100_000,
                                       max_minutes=0.15, lr=1e-2, min_lr=1e-4, log_interval=1))
    assert summary["status"] == "done" and 10 <= summary["steps"] < 1_000_000
    assert "val_loss_whole" in summary
    lrs = [r["lr"] for r in trainer.read_metrics(tmp_path / "run" / "metrics.jsonl") if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # decayed towards min_lr by the end, not cut off at full lr


def test_train_batches_depend_only_on_seed_step_and_shard():
    data = np.arange(1000, dtype=np.uint16)
    x, y = train.train_batch(data, 16, 4, 1, 7, 0, torch.device("cpu"))
    x2, _ = train.train_batch(data, 16, 4, 1, 7, 0, torch.device("cpu"))
    assert torch.equal(x, x2) and torch.equal(y, x + 1)
    assert not torch.equal(x, train.train_batch(data, 16, 4, 1, 8, 0, torch.device("cpu"))[0])
    assert not torch.equal(x, train.train_batch(data, 16, 4, 1, 7, 1, torch.device("cpu"))[0])


def test_bits_per_char_divides_the_nats_by_the_characters_the_scored_tokens_hold():
    char = gpt.CharTokenizer.from_text("")
    # 4 tokens: the last 3 are predicted, at 0.7 nats each, and they hold 3 characters
    assert train.bits_per_char(0.7, np.array(char.encode("abcd")), char) == pytest.approx(0.7 / math.log(2))
    a, b = (gpt.BPETokenizer([]).encode(c)[0] for c in "ab")
    bpe = gpt.BPETokenizer([(a, b)])  # one merge: "ab" is one token
    tokens = np.array(bpe.encode("abcab"))
    assert len(tokens) == 3  # ab, c, ab: 2 predicted tokens hold the 3 characters "cab"
    assert train.bits_per_char(0.7, tokens, bpe) == pytest.approx(0.7 * 2 / 3 / math.log(2))


@pytest.mark.parametrize("n", [50, 49, 65])
def test_whole_split_evaluation_predicts_every_token_once(n):
    data = np.arange(n, dtype=np.uint16)
    targets = [t for _, y in train.whole_split_batches(data, 8, 3, torch.device("cpu")) for t in y.flatten().tolist()]
    assert sorted(t for t in targets if t != -100) == list(range(1, n))


# ----------------------------------------------------------------------------------------------------
# Training runs


def test_a_short_run_writes_checkpoints_metrics_and_plot_and_the_checkpoint_samples(pretrain_args, tmp_path):
    summary = train.main(pretrain_args(tmp_path / "run"))
    assert summary["status"] == "done" and summary["steps"] == 20
    run = tmp_path / "run"
    records = trainer.read_metrics(run / "metrics.jsonl")
    assert sorted(r["step"] for r in records if "train_loss" in r) == list(range(1, 21))  # "after N steps"
    assert [r["step"] for r in records if "val_loss" in r] == [0, 10, 20]
    assert records[-1]["val_loss_whole"] == pytest.approx(summary["val_loss_whole"])
    assert records[-1]["val_bits_per_char"] == pytest.approx(summary["val_loss_whole"] / math.log(2))  # char level
    assert summary["val_loss_whole"] < records[0]["val_loss"]  # it learned something
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, tokenizer, ckpt = gpt.load_model(str(run / "ckpt.pt"))
    assert ckpt["kind"] == "pretrained" and ckpt["train_config"]["n_embd"] == 16
    ids = model.generate(torch.tensor([tokenizer.encode("The")]), 10, seed=0)
    assert len(tokenizer.decode(ids[0].tolist())) == 13
    assert gpt.load_checkpoint(str(run / "last.pt"))["step"] == 20


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_exactly(pretrain_args, tmp_path, optimizer):
    """2N steps straight equal N steps, then --resume for N more: weights, optimizer, schedule,
    dropout randomness and data position all restored."""
    common = dict(max_iters=12, lr_decay_iters=12, dropout=0.1, eval_interval=4, optimizer=optimizer)
    train.main(pretrain_args(tmp_path / "straight", **common))
    train.main(pretrain_args(tmp_path / "resumed", **{**common, "max_iters": 6}))
    summary = train.main(pretrain_args(tmp_path / "resumed", **common) + ["--resume"])
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert list(resumed) == list(range(1, 13))
    assert resumed == straight  # exactly equal floats
    assert summary["steps"] == 12


def test_a_bpe_run_with_muon_scores_its_tokens_per_character(pretrain_args, tmp_path):
    summary = train.main(pretrain_args(tmp_path / "run", tokenizer="bpe", bpe_vocab_size=300, optimizer="muon"))
    assert summary["status"] == "done" and summary["val_loss_whole"] < 5.5
    # a token holds more than one character, so there are fewer bits per character than per token
    assert summary["val_bits_per_char"] < 0.9 * summary["val_loss_whole"] / math.log(2)
    assert gpt.load_checkpoint(tmp_path / "run" / "ckpt.pt")["tokenizer"]["type"] == "bpe"


def test_resume_refuses_to_change_the_model_shape(pretrain_args, tmp_path):
    train.main(pretrain_args(tmp_path / "run", max_iters=2, eval_interval=2))
    with pytest.raises(ConfigError, match=r"cannot change n_embd \(16 -> 32\)"):
        train.main(pretrain_args(tmp_path / "run", n_embd=32) + ["--resume"])
    with pytest.raises(ConfigError, match=r"cannot change rope \(True -> False\)"):
        train.main(pretrain_args(tmp_path / "run") + ["--resume", "--no-rope"])


def test_a_run_from_before_rotary_embeddings_resumes_with_its_learned_positions(pretrain_args, tmp_path):
    train.main(pretrain_args(tmp_path / "run", max_iters=4, eval_interval=2) + ["--no-rope"])
    ckpt = gpt.load_checkpoint(tmp_path / "run" / "last.pt")
    del ckpt["train_config"]["rope"], ckpt["config"]["rope"]  # as such a checkpoint was written
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    summary = train.main(pretrain_args(tmp_path / "run", max_iters=6, eval_interval=2) + ["--resume"])
    assert summary["status"] == "done" and summary["steps"] == 6
    assert not gpt.load_checkpoint(tmp_path / "run" / "last.pt")["config"]["rope"]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(pretrain_args, tmp_path):
    summary = train.main(pretrain_args(tmp_path / "run", lr=1e30, grad_clip=0, warmup_iters=0))
    assert summary["status"] == "nonfinite" and summary["steps"] < 20
    assert gpt.load_checkpoint(str(tmp_path / "run" / "last.pt"))["step"] == 0  # saved before training, never after


def subprocess_env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(pretrain_args, tmp_path):
    """2 processes x 1 micro-batch read the same micro-batches as 1 process x 2 (shards 0 and 1)."""
    common = dict(max_iters=4, eval_interval=100)
    train.main(pretrain_args(tmp_path / "single", grad_accum=2, **common))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *pretrain_args(tmp_path / "ddp", grad_accum=1, **common)]
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    single, ddp = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert list(ddp) == [1, 2, 3, 4]
    assert all(abs(single[s] - ddp[s]) < 1e-5 for s in single), (single, ddp)
    assert result.stdout.count("done: 4 steps") == 1  # only the first process prints


def test_ctrl_c_saves_a_loadable_checkpoint_and_exits_cleanly(pretrain_args, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "train.py", *pretrain_args(run, max_iters=100000, eval_interval=100000)]
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
    assert ckpt["step"] >= 1 and ckpt["step"] == max(train_losses(run))
    gpt.model_from_checkpoint(ckpt)
