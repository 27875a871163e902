"""
data/faq.py: the FAQ, questions about this project with their answers, read from data/faq.jsonl.

One JSON object per line:
  {"question": "...", "answer": "...", "paraphrases": ["...", "..."]}
"paraphrases" (other ways to ask the same question) is optional; other fields are ignored. Two
readers use it: data/instruct.py trains the model on it, and chat_app.py answers the questions it
matches without the model.
"""
from dataclasses import dataclass
from pathlib import Path

from data import DataError
from data.jsonl import read_jsonl

FAQ_PATH = Path(__file__).resolve().parent / "faq.jsonl"

FAQ_FIELDS = ("a JSON object with non-empty strings 'question' and 'answer' "
              "(and optionally 'paraphrases', a list of strings)")


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    paraphrases: tuple = ()


def load_faq(path=FAQ_PATH):
    """The entries of a FAQ file, a list of FaqEntry. Blank lines are skipped; a line that is not JSON
    or lacks a question or an answer is a DataError naming file and line."""
    rows, _ = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no questions found; expected {FAQ_FIELDS} on each line")
    return [faq_entry(row, f"{path}:{number}") for number, row in rows]


def faq_entry(row, where):
    """A FaqEntry from one JSON object, with the spaces around each text removed; `where` is the
    "file:line" for the message when a field is missing or of the wrong type."""
    missing = [key for key in ("question", "answer") if not isinstance(row.get(key), str) or not row[key].strip()]
    if missing:
        raise DataError(f"{where}: missing or empty {' and '.join(map(repr, missing))}: expected {FAQ_FIELDS}")
    paraphrases = row.get("paraphrases", [])
    if isinstance(paraphrases, str):
        paraphrases = [paraphrases]
    if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
        raise DataError(f"{where}: 'paraphrases' must be a list of strings")
    return FaqEntry(row["question"].strip(), row["answer"].strip(), tuple(p.strip() for p in paraphrases if p.strip()))
