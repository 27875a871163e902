"""Bad input, as a new user types it: every command below must end with exit status 2 and one line,
`error: ...`, that says what is wrong and what was expected, never a traceback, and before any
training starts. Each row is a command and a pattern its message must match.

{tmp} is this test's folder, holding the files the rows name (see `workspace`); the commands run in it.
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
import finetune
import gpt
import train
import trainer

ROOT = Path(__file__).resolve().parent
MAINS = {"train.py": train.main, "finetune.py": finetune.main, "bench.py": bench.main}

BAD_INPUTS = [
    # train.py: numbers out of range, checked when the command line is read
    ("train.py --lr=-1", r"--lr must be above 0, got -1.0"),
    ("train.py --lr=nan", r"--lr must be above 0, got nan"),
    ("train.py --lr=abc", r"--lr must be a float, got 'abc'"),
    ("train.py --dropout=2", r"--dropout must be at least 0 and below 1, got 2.0"),
    ("train.py --seed=-1", r"--seed must be at least 0 and at most 4294967295, got -1"),
    ("train.py --weight_decay=-1", r"--weight_decay must be at least 0, got -1.0"),
    ("train.py --max_minutes=-1", r"--max_minutes must be at least 0, got -1.0"),
    ("train.py --max_minutes=inf", r"--max_minutes must be at least 0 \(a finite number\), got inf"),
    ("train.py --n_layer=0", r"--n_layer must be at least 1, got 0"),
    ("train.py --batch_size=2.5", r"--batch_size must be an int, got '2.5'"),
    ("train.py --beta2=1", r"--beta2 must be at least 0 and below 1, got 1.0"),
    ("train.py --grad_clip=-1", r"--grad_clip must be at least 0, got -1.0"),
    ("train.py --eval_interval=0", r"--eval_interval must be at least 1, got 0"),
    ("train.py --bpe_vocab_size=100 --tokenizer=bpe", r"--bpe_vocab_size must be at least 265 and at most 4294967295, got 100"),
    ("train.py --min_lr=0.1 --lr=0.01", r"--min_lr \(0.1\) must not exceed --lr \(0.01\)"),
    ("train.py --n_embd=30 --n_head=4", r"n_embd \(30\) must be divisible by n_head \(4\)"),
    ("train.py --n_embd=15 --n_head=3", r"head size n_embd / n_head \(5\) must be even \(or use --no-rope\)"),
    ("train.py --tokenizer=word", r"--tokenizer must be one of char, bpe, got 'word'"),
    ("train.py --dtype=fp16", r"--dtype must be one of auto, float32, bfloat16, float16, got 'fp16'"),
    # train.py: names, files and folders
    ("train.py --n_layres=2", r"command line: unknown key 'n_layres'; did you mean 'n_layer'\?"),
    ("train.py extra", r"unexpected argument 'extra'; settings look like --key=value"),
    ("train.py --config={tmp}/a_folder", r"a_folder is a folder; --config expects a .toml or .json file"),
    ("train.py --config={tmp}/missing.toml", r"missing.toml: no such config file"),
    ("train.py --config={tmp}/broken.toml", r"broken.toml: cannot parse"),
    ("train.py --config={tmp}/unknown.toml", r"unknown.toml: unknown key 'n_heads'; did you mean 'n_head'\?"),
    ("train.py --out_dir={tmp}/a_file", r"--out_dir=.*a_file is a file; it must be a folder"),
    ("train.py --device=tpu", r"--device=tpu: unknown device 'tpu'"),
    ("train.py --data={tmp}/missing.txt --out_dir={tmp}/o1", r"missing.txt: no such file"),
    ("train.py --data=kvj --out_dir={tmp}/o2", r"unknown dataset 'kvj': did you mean 'kjv'\?"),
    ("train.py --data={tmp}/latin1.txt --out_dir={tmp}/o3", r"latin1.txt is not UTF-8: byte offset 3 \(line 1\)"),
    ("train.py --resume --out_dir={tmp}/empty", r"--resume: .*empty/last.pt does not exist; start the run without --resume"),
    ("train.py --resume --out_dir={tmp}/copied", r"copied/last.pt holds a pretrained model but no training state"),
    ("train.py --resume --out_dir={tmp}/instruct_run",
     r"was written by python finetune.py --task=instruct, which python train.py cannot continue: resume it with "
     r"python finetune.py --task=instruct --resume"),
    # finetune.py
    ("finetune.py", r"--task must be one of classify, instruct, got ''"),
    ("finetune.py --task=chat-bot", r"--task must be one of classify, instruct, got 'chat-bot'"),
    ("finetune.py --task=classify --lr=-1", r"--lr must be above 0, got -1.0"),
    ("finetune.py --task=classify --max_epochs=0", r"--max_epochs must be at least 1, got 0"),
    ("finetune.py --task=instruct --seed=-1", r"--seed must be at least 0"),
    ("finetune.py --task=instruct --freeze=head", r"--freeze applies to --task=classify only"),
    ("finetune.py --task=instruct", r"--init=out/kjv/ckpt.pt does not exist: run python train.py first"),
    ("finetune.py --task=instruct --init={tmp}/missing.pt", r"missing.pt does not exist: check the path"),
    ("finetune.py --task=instruct --init={tmp}/classifier.pt", r"classifier.pt is a classifier; start from a pretrained"),
    ("finetune.py --task=instruct --init={tmp}/pre/ckpt.pt --data={tmp}/missing.json --out_dir={tmp}/f1",
     r"missing.json: no such file; expected a .json or .jsonl file"),
    ("finetune.py --task=classify --init={tmp}/pre/ckpt.pt --data={tmp}/a_folder --out_dir={tmp}/f2",
     r"a_folder is a directory; expected a .csv, .tsv or .jsonl file"),
    ("finetune.py --task=instruct --init={tmp}/pre/ckpt.pt --data={tmp}/binary.json --out_dir={tmp}/f3",
     r"binary.json is not UTF-8"),
    ("finetune.py --task=instruct --init={tmp}/pre/ckpt.pt --data={tmp}/pretty.json --out_dir={tmp}/f4",
     r"pretty.json: expected a JSON list of objects \(or one object per line\), found a single object"),
    ("finetune.py --task=classify --init={tmp}/pre/ckpt.pt --data={tmp}/one_label.tsv --out_dir={tmp}/f5",
     r"one_label.tsv: every example has the label 'spam'; classification needs two or more"),
    ("finetune.py --task=instruct --resume --out_dir={tmp}/pretrain_run",
     r"was written by python train.py, which python finetune.py --task=instruct cannot continue: resume it with "
     r"python train.py --resume"),
    # gpt.py, the sampling command line
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --temperature=-1", r"temperature=-1.0: expected a finite number >= 0"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --temperature=inf", r"temperature=inf: expected a finite number >= 0"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --top_p=2", r"top_p=2.0: expected \(0, 1\]"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --top_k=0", r"top_k=0: expected an int >= 1 \(None: off\)"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --top_k=-5", r"top_k=-5: expected an int >= 1"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --max_new_tokens=-1", r"max_new_tokens=-1: expected >= 0"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --prompt=''", r"--prompt is empty"),
    ("gpt.py --ckpt={tmp}/pre/ckpt.pt --device=tpu", r"unknown device 'tpu'"),
    ("gpt.py --ckpt={tmp}/missing.pt", r"missing.pt: no such checkpoint file"),
    ("gpt.py --ckpt={tmp}/a_file", r"a_file: cannot load checkpoint: the file is truncated or not a torch checkpoint"),
    ("gpt.py --ckpt={tmp}/classifier.pt", r"classifier.pt is a classifier; it labels text rather than writing it"),
    # bench.py
    ("bench.py --rounds=0", r"--rounds must be at least 1, got 0"),
    ("bench.py --seconds=-1", r"--seconds must be above 0, got -1.0"),
    ("bench.py --cases=train-huge-fp32", r"--cases: cannot read case 'train-huge-fp32'"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, pretrain_args):
    """The files and folders the rows name: a tiny pretrained checkpoint and runs, and bad data files."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "a_folder").mkdir()
    (tmp / "empty").mkdir()
    (tmp / "broken.toml").write_text("n_layer = = 2\n")
    (tmp / "unknown.toml").write_text("n_heads = 2\n")
    (tmp / "latin1.txt").write_bytes(b"caf\xe9 au lait\n" * 20)
    (tmp / "binary.json").write_bytes(bytes(range(256)) * 4)
    (tmp / "pretty.json").write_text(json.dumps({"instruction": "Say hi.", "output": "hi"}, indent=2))
    (tmp / "one_label.tsv").write_text("spam\tbuy now\nspam\twin a prize\n")
    train.main(pretrain_args(tmp / "pretrain_run", max_iters=2, eval_interval=2))
    (tmp / "pre").mkdir()
    (tmp / "pre" / "ckpt.pt").write_bytes((tmp / "pretrain_run" / "ckpt.pt").read_bytes())
    (tmp / "copied").mkdir()
    (tmp / "copied" / "last.pt").write_bytes((tmp / "pretrain_run" / "ckpt.pt").read_bytes())
    instruct_run = gpt.load_checkpoint(tmp / "pretrain_run" / "last.pt")  # as finetune.py writes its last.pt
    instruct_run["kind"], instruct_run["finetune_config"] = "instruct", instruct_run.pop("train_config")
    (tmp / "instruct_run").mkdir()
    torch.save(instruct_run, tmp / "instruct_run" / "last.pt")
    model, tokenizer, _ = gpt.load_model(tmp / "pre" / "ckpt.pt")
    gpt.save_checkpoint(tmp / "classifier.pt", gpt.GPTClassifier(model, 2), tokenizer, kind="classifier", labels=["a", "b"])
    return tmp


def run_in_process(command, tmp, capsys):
    """(exit status, what the command printed to stderr), running its script's main in this process."""
    script, *args = shlex.split(command.format(tmp=tmp))
    with pytest.raises(SystemExit) as exit:
        if script == "gpt.py":
            gpt.main(args)
        else:
            trainer.cli(MAINS[script], args)
    return exit.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command, message", BAD_INPUTS, ids=[command for command, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line_and_exit_status_2(command, message, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)  # relative defaults (out/kjv, data/) point into the test's folder
    if "--device=cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    status, err = run_in_process(command, workspace, capsys)
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


@pytest.mark.parametrize("command", ["train.py --lr=nan", "finetune.py --task=instruct --data=missing.json",
                                     "bench.py --rounds=0", "gpt.py --ckpt=missing.pt"])
def test_bad_input_from_a_real_shell_prints_one_line_and_no_traceback(command, tmp_path):
    script, *args = shlex.split(command)
    result = subprocess.run([sys.executable, ROOT / script, *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
