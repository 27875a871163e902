"""Tests for finetune.py: batches, masks, freezing, reports and tiny runs of both tasks. The data
readers it uses are tested in test_data.py, the shared loop in test_trainer.py. Tiny models, CPU, offline."""
import contextlib
import json

import pytest
import torch

import finetune
from data.classify import load_labelled
from gpt import EOS_ID, PAD_ID, CharTokenizer, GPTClassifier, freeze, load_checkpoint, save_checkpoint
from trainer import ConfigError

CPU = torch.device("cpu")


@pytest.fixture
def tokenizer():
    return CharTokenizer.from_text("")


@pytest.fixture
def pretrained(tiny_gpt, tmp_path, tokenizer):
    """A tiny 'pretrained' checkpoint (random weights: these tests check plumbing, not knowledge)."""
    path = tmp_path / "pre" / "ckpt.pt"
    save_checkpoint(str(path), tiny_gpt(tokenizer.vocab_size, block_size=48, n_embd=16), tokenizer, kind="pretrained")
    return str(path)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(pretrained, tmp_path, *flags):
    """finetune.main with fast settings for a tiny model."""
    return finetune.main([f"--init={pretrained}", f"--out_dir={tmp_path / 'run'}", "--device=cpu", "--dtype=float32",
                          "--batch_size=8", "--eval_interval=10", "--warmup_iters=2", *flags])


# ----------------------------------------------------------------------------------------------------
# Instruction batches: the prompt and the padding never count


def example(instruction, output, input=""):
    return {"instruction": instruction, "input": input, "output": output, "family": "test"}


def test_collate_pads_to_the_longest_example_and_masks_prompt_and_padding(tokenizer):
    short, long = example("Hi", "yo"), example("Say it", "hello", input="now")
    encoded = [finetune.encode_instruct(tokenizer, ex) for ex in (short, long)]
    x, y = finetune.collate_instruct(encoded, CPU)
    longest = max(len(ids) for ids, _ in encoded)
    assert x.shape == y.shape == (2, longest - 1)
    (ids, n_prompt) = encoded[0]
    assert x[0, :len(ids) - 1].tolist() == ids[:-1] and (x[0, len(ids) - 1:] == PAD_ID).all()
    # Only the answer and <eos> are targets: everything before them and all padding is -100.
    assert y[0].tolist() == [-100] * (n_prompt - 1) + tokenizer.encode("yo") + [EOS_ID] + [-100] * (longest - len(ids))
    assert y[1][y[1] != -100].tolist() == tokenizer.encode("hello") + [EOS_ID]


def test_masked_loss_is_unchanged_when_the_prompt_targets_change(tiny_gpt, tokenizer):
    model = tiny_gpt(tokenizer.vocab_size, block_size=48, n_embd=16)
    asked, reworded = example("Name a colour.", "red"), example("Give a colour!", "red")  # same length, other text
    x, y = finetune.collate_instruct([finetune.encode_instruct(tokenizer, asked)], CPU)
    _, y_reworded = finetune.collate_instruct([finetune.encode_instruct(tokenizer, reworded)], CPU)
    _, loss = model(x, y)
    _, loss_reworded = model(x, y_reworded)
    assert torch.equal(loss, loss_reworded)
    # ...while the answer's targets do count: the loss is the mean over the answer and <eos> alone.
    logits, _ = model(x)
    n_prompt = finetune.encode_instruct(tokenizer, asked)[1]
    answer = torch.tensor(tokenizer.encode("red") + [EOS_ID])
    by_hand = torch.nn.functional.cross_entropy(logits[0, n_prompt - 1:], answer)
    assert torch.allclose(loss, by_hand)


def test_classify_collate_right_pads_and_the_classifier_ignores_padding(tiny_gpt, tokenizer):
    pairs = [(tokenizer.encode("a short one"), 0), (tokenizer.encode("a much longer text here"), 1)]
    x, y = finetune.collate_classify(pairs, CPU)
    assert x.shape == (2, len(pairs[1][0])) and y.tolist() == [0, 1]
    assert (x[0, len(pairs[0][0]):] == PAD_ID).all()
    classifier = GPTClassifier(tiny_gpt(tokenizer.vocab_size, block_size=48, n_embd=16), 2).eval()
    alone, _ = classifier(torch.tensor([pairs[0][0]]))
    batched, _ = classifier(x)
    assert torch.allclose(alone[0], batched[0], atol=1e-6)


def test_training_batches_cover_every_example_group_lengths_and_resume_exactly():
    lengths = torch.randint(5, 100, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = finetune.training_batches(lengths, batch_size=8, seed=3)
    epoch = [next(batches) for _ in range(25)]  # 200 examples: 16 batches from a pool of 128, 9 from the rest
    assert sorted(i for batch in epoch for i in batch) == list(range(200))
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in epoch)
    assert padded < 1.2 * sum(lengths)  # random batches of 8 would pad to about 1.7 times the tokens
    resumed = finetune.training_batches(lengths, batch_size=8, seed=3, start=20)
    assert [next(resumed) for _ in range(10)] == epoch[20:] + [next(batches) for _ in range(5)]


# ----------------------------------------------------------------------------------------------------
# Classification data formats and their errors


def test_texts_are_kept_whole_up_to_the_window_limit_then_cut_and_counted(tmp_path, tokenizer):
    path = write(tmp_path, "d.tsv", "".join(f"{lab}\t{text}\n" for lab, text in
                                            [("a", "x" * 100), ("a", "short"), ("a", "y" * 60), ("b", "ok"), ("b", "fine"), ("b", "z" * 49)]))
    cfg = finetune.finetune_config(["--task=classify", f"--data={path}"])
    data = finetune.classify_data(cfg, load_labelled(path), path, tokenizer, block_size=10)  # 8 windows: 80 tokens
    assert finetune.CLASSIFY_WINDOWS == 8 and data.truncated == 1
    assert sorted(len(ids) for ids, _ in data.train + data.val + data.test)[-3:] == [49, 60, 80]


# ----------------------------------------------------------------------------------------------------
# Instruction data


def test_exact_match_ignores_case_and_spacing_except_for_case_skills():
    assert finetune.normalise("  Paris ", "capital") == finetune.normalise("paris", "capital")
    assert finetune.normalise("a  b", "faq") == "a b"
    assert finetune.normalise("HELLO", "upper") != finetune.normalise("hello", "upper")


# ----------------------------------------------------------------------------------------------------
# Freezing, reports, checkpoints, and tiny end-to-end runs


@pytest.mark.parametrize("strategy, n, frozen_prefixes", [
    ("head", 0, ("gpt.",)),
    ("last_n", 1, ("gpt.wte", "gpt.wpe", "gpt.blocks.0.")),
])
def test_frozen_parameters_do_not_change_in_a_training_step(tiny_gpt, tokenizer, strategy, n, frozen_prefixes):
    classifier = GPTClassifier(tiny_gpt(tokenizer.vocab_size, block_size=48, n_embd=16), 2)
    freeze(classifier, strategy, n)
    before = {name: p.detach().clone() for name, p in classifier.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x, y = finetune.collate_classify([(tokenizer.encode("some text"), 0), (tokenizer.encode("other"), 1)], CPU)
    _, loss = classifier(x, y)
    loss.backward()
    optimizer.step()
    for name, p in classifier.named_parameters():
        frozen = name.startswith(frozen_prefixes)
        assert torch.equal(p, before[name]) == frozen, name


def test_classification_report_counts_by_hand():
    report = finetune.classification_report(["ham", "spam"], true=[0, 0, 0, 1], predicted=[0, 1, 0, 1],
                                            train_label_counts={"ham": 30, "spam": 10})
    assert report["accuracy"] == 0.75
    assert report["confusion"]["matrix"] == [[2, 1], [0, 1]]
    assert report["per_class"]["spam"]["precision"] == 0.5 and report["per_class"]["spam"]["recall"] == 1.0
    assert report["majority_baseline"] == {"label": "ham", "accuracy": 0.75}
    assert "spam" in finetune.format_classification(report)


def test_tiny_classify_run_learns_and_writes_a_classifier_checkpoint_and_report(tmp_path, pretrained):
    rows = [("pos", f"good {w} happy") for w in "abcdefghij"] + [("neg", f"zzz {w} xxx qqq") for w in "abcdefghij"]
    data = write(tmp_path, "d.tsv", "".join(f"{label}\t{text}\n" for label, text in rows))
    report = run(pretrained, tmp_path, "--task=classify", f"--data={data}", "--max_iters=30", "--lr=3e-3")
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["accuracy"] == report["accuracy"] == 1.0
    assert saved["majority_baseline"]["accuracy"] == 0.5 and set(saved["per_class"]) == {"neg", "pos"}
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    assert ckpt["kind"] == "classifier" and ckpt["labels"] == ["neg", "pos"]
    assert (tmp_path / "run" / "loss.png").exists() and (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_time_budget_ends_an_instruct_run_early_with_the_schedule_completed_and_a_report(tmp_path, pretrained):
    records = [{"instruction": f"Echo {w}.", "input": "", "output": w} for w in ["cat", "dog", "sun", "sea", "sky"] * 20]
    data = write(tmp_path, "set.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    report = run(pretrained, tmp_path, "--task=instruct", f"--data={data}", "--max_iters=1000000", "--max_minutes=0.15",
                 "--max_epochs=1000000", "--eval_interval=1000000", "--log_interval=1", "--lr=3e-3", "--min_lr=3e-5")
    assert report["status"] == "done" and 10 <= report["steps"] < 1_000_000 and "exact_match" in report
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
           if "lr" in line]
    assert lrs[-1] < 0.2 * max(lrs)  # decayed by the end, not cut off at full lr


def test_tiny_instruct_run_lowers_the_loss_and_writes_an_instruct_checkpoint_and_report(tmp_path, pretrained):
    records = [{"instruction": f"Echo {w}.", "input": "", "output": w, "family": "echo"} for w in
               ["cat", "dog", "sun", "sea", "sky", "hat", "pen", "cup", "box", "map", "owl", "ant"]]
    data = write(tmp_path, "set.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    report = run(pretrained, tmp_path, "--task=instruct", f"--data={data}", "--max_iters=30", "--lr=3e-3")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert val[-1] < val[0]
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["per_family"]["echo"]["total"] == 1 and saved["heldout_loss"] == report["heldout_loss"]
    assert saved["examples"] and {"instruction", "expected", "answer", "correct"} <= set(saved["examples"][0])
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["kind"] == "instruct"


def test_an_interrupted_run_resumes_to_the_same_losses(tmp_path, pretrained, monkeypatch, stop_after):
    records = [{"instruction": f"Echo {w}.", "output": w} for w in ["cat", "dog", "sun", "sea", "sky", "hat", "pen"]]
    data = write(tmp_path, "set.json", json.dumps(records))
    flags = ["--task=instruct", f"--data={data}", "--max_iters=12", "--max_epochs=100", "--log_interval=1", "--lr=3e-3"]
    straight = tmp_path / "straight"
    run(pretrained, straight, *flags)
    real_start_run = finetune.start_run

    @contextlib.contextmanager
    def stopping_run(cfg, launched):  # Ctrl-C on the fifth step
        with real_start_run(cfg, launched) as run:
            run.stop = stop_after(5)
            yield run

    monkeypatch.setattr(finetune, "start_run", stopping_run)
    assert run(pretrained, tmp_path, *flags)["status"] == "interrupted"
    assert not (tmp_path / "run" / "report.json").exists()
    monkeypatch.undo()
    assert run(pretrained, tmp_path, *flags, "--resume")["status"] == "done"

    def train_losses(run_dir):
        return [(m["step"], m["train_loss"]) for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if "train_loss" in m]
    assert train_losses(tmp_path / "run") == train_losses(straight / "run")
    assert len(train_losses(straight / "run")) == 12


def test_scratch_init_is_the_default_pretraining_start_with_random_weights(tmp_path):
    cfg = finetune.finetune_config(["--task=instruct", "--init=scratch"])
    model, tokenizer = finetune.initial_model(cfg)
    default = finetune.TrainConfig()
    assert (model.config.n_layer, model.config.n_embd) == (default.n_layer, default.n_embd)
    corpus = finetune.prepare(default.data, default.tokenizer, default.bpe_vocab_size, default.block_size)
    assert tokenizer.to_dict() == corpus.tokenizer.to_dict()  # the corpus's tokenizer, learned before training
    assert cfg.out_dir == "out/scratch_instruct"


def test_bad_starting_points_and_settings_are_refused(tiny_gpt, tmp_path, pretrained, tokenizer, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no out/kjv/ckpt.pt here
    with pytest.raises(ConfigError, match="run python train.py first"):
        finetune.main(["--task=instruct", "--device=cpu"])
    classifier_path = str(tmp_path / "cls.pt")
    save_checkpoint(classifier_path, GPTClassifier(tiny_gpt(tokenizer.vocab_size, block_size=48, n_embd=16), 2), tokenizer, kind="classifier", labels=["a", "b"])
    with pytest.raises(ConfigError, match="is a classifier"):
        finetune.main(["--task=instruct", f"--init={classifier_path}", "--device=cpu"])
    with pytest.raises(ConfigError, match="task must be one of classify, instruct"):
        finetune.main([f"--init={pretrained}"])
    with pytest.raises(ConfigError, match="--freeze applies to --task=classify only"):
        finetune.main(["--task=instruct", "--freeze=head"])
    with pytest.raises(ConfigError, match="did you mean 'unfreeze_layers'"):
        finetune.main(["--task=classify", "--unfreeze_layer=2"])


def test_task_defaults_sit_between_dataclass_defaults_and_flags():
    assert finetune.finetune_config(["--task=classify"]).max_iters == finetune.TASK_DEFAULTS["classify"]["max_iters"]
    assert finetune.finetune_config(["--task=classify", "--max_iters=7"]).max_iters == 7
    assert finetune.finetune_config(["--task=instruct"]).max_iters == finetune.FinetuneConfig.max_iters


@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_shipped_config_files_spell_out_the_defaults(task):
    from_file = finetune.finetune_config(["--config", f"config/finetune_{task}.toml"])
    assert from_file == finetune.finetune_config([f"--task={task}"])


def test_instruct_examples_longer_than_the_context_are_left_out_and_counted(tokenizer):
    fits, too_long = example("Say hi.", "hi"), example("Say a lot.", "x" * 60)
    data = finetune.instruct_data([fits, too_long], [fits], [fits], "set.json", tokenizer, block_size=48)
    assert data.skipped == 1 and len(data.train) == 1 and data.max_answer_tokens == 3
