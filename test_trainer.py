"""Tests for trainer.py, the machinery every training run shares: configuration, precision policy,
optimizers and schedule, the run folder, and the loop's faults. One behaviour per test, each able to fail.
Runs use a tiny model on a tiny generated corpus (conftest.py)."""
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import finetune
import gpt
import train
import trainer
from gpt import CheckpointError
from train import TrainConfig
from trainer import ConfigError, RunConfig, parse_config, precision_policy

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
    config = __import__('train').model_config(parse_config(TrainConfig, ["--no-rope", "--n_layer=3", "--bias"]), vocab_size=50)
    assert (config.rope, config.n_layer, config.bias, config.vocab_size) == (False, 3, True, 50)
    assert __import__('train').model_config(TrainConfig(), vocab_size=50) == gpt.GPTConfig(
        vocab_size=50, **{k: getattr(TrainConfig(), k) for k in ("block_size", "n_layer", "n_head", "n_embd",
                                                                   "dropout", "bias", "rope")})


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
    with trainer.autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with trainer.autocast("cpu", None):
        assert (a @ a).dtype == torch.float32


def test_bfloat16_measurement_leaves_weights_grads_and_rng_untouched():
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    speedup = trainer.cpu_bf16_speedup(model, 8, tokens=32, rounds=1)
    assert speedup > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, p) and p.grad is None for a, p in zip(before, model.parameters()))


# ----------------------------------------------------------------------------------------------------
# Optimizers and schedule


def test_weight_decay_applies_to_matrices_only():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    [optimizer] = trainer.build_optimizers(model, trainer.RunConfig(lr=1e-3, weight_decay=0.1), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_muon_takes_the_blocks_weight_matrices_and_adamw_everything_else():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, rope=True))
    adamw, muon = trainer.build_optimizers(model, RunConfig(optimizer="muon", muon_lr=0.05), "cpu")
    name = {id(p): n for n, p in model.named_parameters()}
    to_muon = sorted(name[id(p)] for group in muon.param_groups for p in group["params"])
    assert to_muon == sorted(f"blocks.{i}.{layer}.weight" for i in range(2)
                             for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    to_adamw = [name[id(p)] for group in adamw.param_groups for p in group["params"]]
    assert "wte.weight" in to_adamw and "blocks.0.ln_1.weight" in to_adamw and "blocks.1.attn.c_attn.bias" in to_adamw
    assert len(to_adamw) + len(to_muon) == len(list(model.parameters()))  # every parameter, once
    assert muon.param_groups[0]["peak_lr"] == 0.05 and adamw.param_groups[0]["peak_lr"] == RunConfig().lr


@pytest.mark.parametrize("shape", [(48, 16), (16, 16), (16, 64)])
def test_our_muon_makes_torchs_update_in_float32(shape):
    """torch.optim.Muon orthogonalises in bfloat16, so the two agree to bfloat16's precision, not exactly."""
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(shape)), torch.nn.Parameter(torch.randn(shape))
    theirs.data.copy_(ours.data)
    start = ours.detach().clone()
    steppers = [trainer.Muon([ours], lr=0.02),
                torch.optim.Muon([theirs], lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True)]
    for _ in range(3):  # so the momentum matters too
        grad = torch.randn(shape)
        for p, optimizer in zip((ours, theirs), steppers):
            p.grad = grad.clone()
            optimizer.step()
    moved_ours, moved_theirs = ours.detach() - start, theirs.detach() - start
    assert (moved_ours - moved_theirs).norm() < 0.02 * moved_theirs.norm()


def test_orthogonalise_brings_every_singular_value_near_one():
    torch.manual_seed(0)
    g = torch.randn(32, 8) @ torch.diag(torch.logspace(-1, 1, 8))  # singular values spread about 100-fold
    values = torch.linalg.svdvals(trainer.orthogonalise(g))
    assert values.min() > 0.5 and values.max() < 1.5


def test_every_optimizer_follows_the_schedule_scaled_to_its_own_peak():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, rope=True))
    cfg = RunConfig(optimizer="muon", lr=1e-3, min_lr=1e-4, muon_lr=0.02, warmup_iters=0)
    adamw, muon = trainer.build_optimizers(model, cfg, "cpu")
    trainer.set_learning_rates([adamw, muon], cfg, step=50, horizon=100)  # halfway down the cosine
    assert adamw.param_groups[0]["lr"] == pytest.approx(0.55e-3) and muon.param_groups[0]["lr"] == pytest.approx(0.011)


def test_lr_warms_up_then_decays_by_cosine_to_min_lr():
    lrs = [trainer.lr_at(s, 1.0, 0.1, 10, 100) for s in range(120)]
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
    assert trainer.fitted_horizon(1000, step, steps_done, loop_s, left_s) == expected


# ----------------------------------------------------------------------------------------------------
# The run folder and metrics


def test_metrics_reader_skips_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    trainer.append_metrics(path, step=0, val_loss=4.5)
    with open(path, "a") as f:
        f.write('{"step": 1, "train_lo')
    assert trainer.read_metrics(path) == [{"step": 0, "val_loss": 4.5}]




def test_resuming_drops_records_logged_after_the_checkpoint_and_unreadable_lines(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    for step in (0, 5, 10, 15):
        trainer.append_metrics(path, step=step, val_loss=1.0)
    with open(path, "ab") as f:
        f.write(b'{"val_loss": 2.0}\n[1, 2]\n{"step": "7"}\ncaf\xe9\n')  # no step, not a record, not UTF-8
    trainer.restart_metrics(path, 10)
    assert [r["step"] for r in trainer.read_metrics(path)] == [0, 5, 10]
    assert "skipped 4 unreadable line(s)" in capsys.readouterr().out


def test_plot_and_rewrites_use_temporary_files_of_their_own(tmp_path, monkeypatch):
    replaced = []
    real_replace = trainer.os.replace
    monkeypatch.setattr(trainer.os, "replace", lambda src, dst: (replaced.append(Path(src).name), real_replace(src, dst)))
    trainer.append_metrics(tmp_path / "metrics.jsonl", step=1, train_loss=2.0)
    for _ in range(2):
        trainer.plot_losses(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
        trainer.restart_metrics(tmp_path / "metrics.jsonl", 1)
    assert len(set(replaced)) == 4 and all(name.endswith(".tmp") for name in replaced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.jsonl"]  # no temporary file left


def test_a_fresh_run_keeps_an_earlier_run_aside_instead_of_overwriting_it(pretrain_args, tmp_path):
    run = tmp_path / "run"
    train.main(pretrain_args(run, max_iters=4, eval_interval=2))
    first = (run / "ckpt.pt").read_bytes()
    train.main(pretrain_args(run, max_iters=2, eval_interval=2, seed=7))
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert (aside / "ckpt.pt").read_bytes() == first  # the earlier run, untouched
    assert gpt.load_checkpoint(aside / "last.pt")["step"] == 4 and (aside / "metrics.jsonl").exists()
    assert gpt.load_checkpoint(run / "last.pt")["step"] == 2  # the new run, in the folder it asked for
    assert max(r["step"] for r in trainer.read_metrics(run / "metrics.jsonl")) == 2


def hold_lock(out_dir):
    """A separate process that holds out_dir's lock until it is killed."""
    code = f"import trainer, time; held = trainer.lock_folder({str(out_dir)!r}); print('locked', flush=True); time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=Path(trainer.__file__).parent, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_run_leaves_no_lock(pretrain_args, tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=rf"run is in use by another run \(pid {holder.pid}, started .*\); wait"):
            train.main(pretrain_args(tmp_path / "run", max_iters=2))
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash or kill -9 would end it
        holder.wait()
    assert train.main(pretrain_args(tmp_path / "run", max_iters=2))["status"] == "done"


def test_resume_names_what_a_wrong_last_pt_is(pretrain_args, tmp_path):
    run = tmp_path / "run"
    train.main(pretrain_args(run, max_iters=2, eval_interval=2))
    (run / "last.pt").write_bytes((run / "ckpt.pt").read_bytes())  # a ckpt.pt copied over last.pt
    with pytest.raises(CheckpointError, match="holds a pretrained model but no training state.*copy of a ckpt.pt"):
        train.main(pretrain_args(run) + ["--resume"])
    train.main(pretrain_args(run, max_iters=2, eval_interval=2))
    with pytest.raises(CheckpointError, match=r"was written by python train.py, which python finetune.py --task=instruct "
                                              r"cannot continue: resume it with python train.py --resume"):
        finetune.main(["--task=instruct", f"--out_dir={run}", "--resume", "--device=cpu"])


# ----------------------------------------------------------------------------------------------------
# The loop, on a toy task: every sequence repeats one token, so the model learns to copy


def toy_task(seed=0):
    tokenizer = gpt.CharTokenizer.from_text("")
    torch.manual_seed(seed)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))

    def batches(start_step, rank, world_size):
        for step in itertools.count(start_step):
            x = torch.randint(10, 20, (4, 1), generator=torch.Generator().manual_seed(step)).expand(4, 8)
            yield x, x

    val = [(torch.full((2, 8), 12), torch.full((2, 8), 12))]
    return trainer.Task(kind="pretrained", model=model, tokenizer=tokenizer, batches=batches, val_batches=val,
                        command="python toy.py", extras={"train_config": {}})


def run_toy(tmp_path, task, resumed=None, stop=None, **settings):
    cfg = RunConfig(**{"out_dir": str(tmp_path / "toy"), "max_iters": 12, "eval_interval": 2, "log_interval": 1,
                       "warmup_iters": 0, "lr": 1e-2, "max_minutes": 0, "device": "cpu", "dtype": "float32", "patience": 0,
                       **settings})
    with trainer.start_run(cfg, time.time()) as run:
        if stop is not None:
            run.stop = stop
        return trainer.train_loop(cfg, task, run, resumed)


def scripted_losses(monkeypatch, losses):
    """Make every evaluation return the next of losses, whatever the model does."""
    script = iter(losses)
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: next(script))


def test_the_loop_keeps_the_best_model_and_stops_once_patience_runs_out(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [3.0, 2.0, 1.5, 1.8, 1.9, 2.5, 9.9])  # at steps 0, 2, 4, ...: best at 4
    task = toy_task()
    result = run_toy(tmp_path, task, patience=3)
    assert result.status == "done" and result.steps == 10 and result.best_val == 1.5
    assert "stopped early at step 10: the val loss rose 3 evaluations in a row" in result.note
    best = gpt.load_checkpoint(tmp_path / "toy" / "ckpt.pt")
    assert best["step"] == 4 and best["val_loss"] == 1.5
    assert all(torch.equal(v, best["model"][k]) for k, v in task.model.state_dict().items())  # ends as the best


def test_a_plateau_is_no_reason_to_stop_only_a_loss_that_keeps_rising_is(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [1.0, 2.0, 1.5, 1.6, 1.2, 1.3, 1.4])  # never 3 rises in a row
    assert run_toy(tmp_path, toy_task(), patience=3).steps == 12


def test_patience_zero_never_stops_early(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert run_toy(tmp_path, toy_task(), patience=0).steps == 12


def test_an_interrupted_loop_resumes_with_its_stop_steps_evaluation_kept(tmp_path, stop_after):
    straight = run_toy(tmp_path / "a", toy_task())
    interrupted = run_toy(tmp_path / "b", toy_task(), stop=stop_after(5))
    assert interrupted.status == "interrupted" and interrupted.steps == 5
    assert "continue with python toy.py --resume" in interrupted.note
    resumed = trainer.resume_checkpoint(tmp_path / "b" / "toy", "train_config", "python toy.py")
    task = toy_task(seed=1)
    task.model.load_state_dict(resumed["model"])
    assert run_toy(tmp_path / "b", task, resumed).status == "done"
    metrics = {name: trainer.read_metrics(tmp_path / name / "toy" / "metrics.jsonl") for name in "ab"}
    assert [r["step"] for r in metrics["b"] if "val_loss" in r] == [0, 2, 4, 5, 6, 8, 10, 12]  # 5: the stop
    train_a = [(r["step"], r["train_loss"]) for r in metrics["a"] if "train_loss" in r]
    assert [(r["step"], r["train_loss"]) for r in metrics["b"] if "train_loss" in r] == train_a
    assert straight.best_val == pytest.approx(trainer.read_metrics(tmp_path / "b" / "toy" / "metrics.jsonl")[-1]["val_loss"])
