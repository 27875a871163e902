"""
data/instruct.py: the default instruction-tuning set, and the loader for a user's own.

The default set is generated, deterministically, from skills and small tables written here:
  skills  reverse, upper-case, lower-case, count or spell out a word; add or subtract two numbers
          below 1000; say which of two numbers is larger
  facts   capitals, animal families ("dogs are canines"), chemical symbols, opposites
  faq     the questions of data/faq.jsonl (read by data/faq.py), the FAQ the chat app also uses
Every item comes in many phrasings. The held-out split tests generalisation, so it holds
phrasings never seen in training (in any case or punctuation), and for skills also words and
numbers never seen in training.
Fact rows and FAQ answers are the same in both splits: a fact the model never saw cannot be known.

Each example is {"instruction", "input", "output", "family"}, the Alpaca layout plus a family name
for per-family scores. `python -m data.instruct` writes both splits to data/instruct/ to read them.

A user's own set (load_alpaca) is a JSON list of {"instruction", "input", "output"} objects, or one
such object per line (JSON lines); "input" may be left out.
"""
import json
import os
import random
import re
from collections import Counter

from data import DataError, decode_utf8, read_bytes
from data.faq import load_faq
from data.jsonl import json_type, parse_jsonl
from data.prepare import kjv_text

SEED = 1337

# Families whose answer is a change of case: there, exact match must not ignore case.
CASE_SENSITIVE_FAMILIES = ("upper", "lower")


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Canada": "Ottawa",
    "Australia": "Canberra", "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Russia": "Moscow", "Greece": "Athens", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw",
    "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Peru": "Lima", "Chile": "Santiago",
    "Colombia": "Bogota", "Costa Rica": "San Jose", "Cuba": "Havana", "Turkey": "Ankara", "Iran": "Tehran",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul", "Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Switzerland": "Bern", "Nigeria": "Abuja", "Morocco": "Rabat", "Ghana": "Accra",
    "Ethiopia": "Addis Ababa", "Indonesia": "Jakarta", "Philippines": "Manila", "New Zealand": "Wellington",
}

# The seed's facts were "dogs are canines, cats are felines": animals (plural) and their family.
ANIMAL_FAMILIES = {
    "dogs": "canines", "wolves": "canines", "foxes": "canines", "jackals": "canines", "coyotes": "canines",
    "cats": "felines", "lions": "felines", "tigers": "felines", "leopards": "felines", "cheetahs": "felines",
    "lynxes": "felines", "cows": "bovines", "bison": "bovines", "buffalo": "bovines", "yaks": "bovines",
    "horses": "equines", "donkeys": "equines", "zebras": "equines", "pigs": "porcines", "boars": "porcines",
    "sheep": "ovines", "goats": "caprines", "bears": "ursines", "deer": "cervines", "moose": "cervines",
    "mice": "murines", "rats": "murines", "crows": "corvines", "ravens": "corvines", "magpies": "corvines",
}

CHEMICAL_SYMBOLS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "carbon": "C", "nitrogen": "N", "oxygen": "O",
    "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg", "aluminium": "Al", "silicon": "Si",
    "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar", "potassium": "K", "calcium": "Ca",
    "iron": "Fe", "nickel": "Ni", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "tin": "Sn", "iodine": "I",
    "platinum": "Pt", "gold": "Au", "mercury": "Hg", "lead": "Pb", "uranium": "U", "tungsten": "W",
}

# Each pair is asked both ways. A word appears in one pair only, so every question has one answer.
OPPOSITE_PAIRS = [
    ("hot", "cold"), ("wet", "dry"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("open", "closed"),
    ("early", "late"), ("full", "empty"), ("high", "low"), ("rich", "poor"), ("strong", "weak"),
    ("hard", "soft"), ("thick", "thin"), ("loud", "quiet"), ("day", "night"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("true", "false"), ("left", "right"), ("above", "below"), ("first", "last"),
    ("always", "never"), ("love", "hate"), ("inside", "outside"), ("north", "south"), ("east", "west"),
    ("before", "after"), ("give", "take"), ("alive", "dead"), ("clean", "dirty"), ("long", "short"),
    ("wide", "narrow"), ("deep", "shallow"), ("heavy", "light"), ("black", "white"), ("asleep", "awake"),
    ("cheap", "expensive"), ("safe", "dangerous"), ("top", "bottom"), ("remember", "forget"),
    ("increase", "decrease"), ("entrance", "exit"), ("friend", "enemy"), ("big", "small"),
]
OPPOSITES = dict(OPPOSITE_PAIRS) | {b: a for a, b in OPPOSITE_PAIRS}

# Phrasings: the text before a newline is the instruction, the text after it the input, exactly as
# gpt.instruction_ids lays out the prompt. Each family: (24 training phrasings, 2 held out). With 12
# training phrasings the model keyed on whole sentences (upper case: 97% in trained phrasings, 30% in
# new ones); with 24, each also in lower case without its final stop (casual_forms), it closed for
# the case skills and the fact tables, while spelling, reversal and counting still lose much (README).
PHRASINGS = {
    "reverse": (["Reverse the word {w}.", "Reverse this word.\n{w}", "Write {w} backwards.", "Spell {w} backwards.",
                 "What is {w} reversed?", "Write this word backwards.\n{w}", "reverse {w}", "Reverse {w}, please.",
                 "Can you write {w} backwards?", "Reverse it.\n{w}", "What is this word backwards?\n{w}",
                 "Give me {w} reversed.",
                 "Flip {w} around.", "Reverse the spelling of {w}.", "Write {w} from the last letter to the first.",
                 "Mirror the word {w}.", "What do you get if you reverse {w}?", "Backwards, please.\n{w}",
                 "Flip this word.\n{w}", "Read this word from right to left.\n{w}", "How is {w} written backwards?",
                 "Turn {w} back to front.", "Write the word {w} the other way round.", "I need {w} reversed."],
                ["Write the letters of {w} in reverse order.", "Reverse the letters of this word.\n{w}"]),
    "upper": (["Write {w} in upper case.", "Convert this word to upper case.\n{w}", "Make {w} uppercase.",
               "Write {w} in capital letters.", "Uppercase this word.\n{w}", "Capitalize every letter of {w}.",
               "uppercase {w}", "Put {w} in capitals.", "Can you write {w} in upper case?", "Make it uppercase.\n{w}",
               "Write this in capital letters.\n{w}", "Upper-case {w}, please.",
               "Change {w} to upper case.", "Give me {w} in all caps.", "Write {w} in all caps.",
               "All caps, please.\n{w}", "Change this word to capitals.\n{w}",
               "Turn this word into upper case.\n{w}", "How is {w} written in upper case?",
               "Print {w} in uppercase letters.", "Convert {w} to capitals.", "What is {w} in upper case?",
               "Type this word in capitals.\n{w}", "Shout the word {w}."],
              ["Turn {w} into all capital letters.", "Rewrite this word in uppercase.\n{w}"]),
    "lower": (["Write {W} in lower case.", "Convert this word to lower case.\n{W}", "Make {W} lowercase.",
               "Write {W} in small letters.", "Lowercase this word.\n{W}", "Remove the capitals from {W}.",
               "lowercase {W}", "Put {W} in small letters.", "Can you write {W} in lower case?",
               "Make it lowercase.\n{W}", "Write this in small letters.\n{W}", "Lower-case {W}, please.",
               "Change {W} to lower case.", "Give me {W} without capitals.", "Write {W} with no capital letters.",
               "Small letters, please.\n{W}", "Change this word to small letters.\n{W}",
               "Turn this word into lower case.\n{W}", "How is {W} written in lower case?",
               "Print {W} in lowercase letters.", "Convert {W} to small letters.", "What is {W} in lower case?",
               "Type this word in small letters.\n{W}", "Stop shouting: write {W} in lower case."],
              ["Turn {W} into all small letters.", "Rewrite this word in lowercase.\n{W}"]),
    "count": (["How many letters are in {w}?", "Count the letters in this word.\n{w}", "How many letters does {w} have?",
               "Count the letters of {w}.", "What is the number of letters in {w}?",
               "How long is this word in letters?\n{w}", "count the letters in {w}", "How many letters in {w}?",
               "Letters in {w}?", "How many letters?\n{w}", "What is the length of {w}?",
               "How long is the word {w}?",
               "How many characters are in {w}?", "Count the characters of this word.\n{w}",
               "What is the letter count of {w}?", "Give the number of letters in {w}.",
               "Number of letters in this word?\n{w}", "How many letters make up {w}?",
               "How many letters make up this word?\n{w}", "Count {w}'s letters.",
               "Find the length of {w} in letters.", "Tell me the length of {w}.",
               "What is the number of characters in this word?\n{w}", "{w} has how many letters?"],
              ["Tell me how many letters {w} has.", "Count how many letters this word has.\n{w}"]),
    "spell": (["Spell {w}.", "Spell out this word letter by letter.\n{w}", "Spell the word {w}.", "How do you spell {w}?",
               "Spell {w} letter by letter.", "Spell this word.\n{w}", "spell {w}", "Spell {w}, please.",
               "Can you spell {w}?", "Spell it.\n{w}", "Spell out {w}.", "How is this word spelled?\n{w}",
               "Spell {w} out.", "Write {w} letter by letter.", "Give me the spelling of {w}.",
               "Write out the letters of {w} with dashes.", "Spell this out.\n{w}", "Letter by letter, please.\n{w}",
               "What is the spelling of {w}?", "Break {w} into letters.", "Spell this word for me.\n{w}",
               "Split {w} into its letters.", "How do I spell {w}?", "Show the letters of {w} one by one."],
              ["Spell out {w} one letter at a time.", "Please spell this word out.\n{w}"]),
    "add": (["What is {a} plus {b}?", "Add {a} and {b}.", "{a} + {b} =", "What is the sum of {a} and {b}?",
             "Add these numbers.\n{a} + {b}", "Calculate {a} + {b}.", "what is {a} + {b}", "Add {b} to {a}.",
             "What do {a} and {b} add up to?", "Add.\n{a} + {b}", "What is the sum?\n{a} + {b}", "{a} plus {b}?",
             "{a} plus {b} equals what?", "Sum {a} and {b}.", "What is {a} + {b}?", "Compute {a} + {b}.",
             "Work out {a} plus {b}.", "What do you get when you add {a} and {b}?", "Add these two.\n{a} + {b}",
             "Calculate.\n{a} + {b}", "What is the total of {a} and {b}?", "Give the sum of {a} and {b}.",
             "Compute this sum.\n{a} + {b}", "Total of these numbers?\n{a} + {b}"],
            ["How much is {a} plus {b}?", "Find the sum of these two numbers.\n{a} + {b}"]),
    "subtract": (["What is {a} minus {b}?", "Subtract {b} from {a}.", "{a} - {b} =", "What is {a} take away {b}?",
                  "Subtract these numbers.\n{a} - {b}", "Calculate {a} - {b}.", "what is {a} - {b}",
                  "Take {b} from {a}.", "What is the difference between {a} and {b}?", "Subtract.\n{a} - {b}",
                  "What is the difference?\n{a} - {b}", "{a} minus {b}?",
                  "{a} minus {b} equals what?", "What is {a} - {b}?", "Compute {a} - {b}.",
                  "Work out {a} minus {b}.", "What do you get when you take {b} from {a}?",
                  "Subtract these two.\n{a} - {b}", "Calculate.\n{a} - {b}",
                  "What is left when {b} is taken from {a}?", "Give the difference of {a} and {b}.",
                  "Compute this difference.\n{a} - {b}", "Take away.\n{a} - {b}", "Deduct {b} from {a}."],
                 ["How much is {a} minus {b}?", "Find the difference of these numbers.\n{a} - {b}"]),
    "larger": (["Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?", "What is the larger of {a} and {b}?",
                "Pick the larger number.\n{a} or {b}", "Which is greater, {a} or {b}?",
                "Which of these numbers is larger?\n{a} or {b}", "larger of {a} and {b}", "Is {a} or {b} bigger?",
                "Which is more, {a} or {b}?", "Which is bigger?\n{a} or {b}", "Name the greater number.\n{a} or {b}",
                "Which number is larger, {a} or {b}?",
                "Which is the greater number, {a} or {b}?", "Which is higher, {a} or {b}?",
                "Which number is more: {a} or {b}?", "Give the bigger of {a} and {b}.",
                "Compare {a} and {b} and give the larger.", "Which is the largest?\n{a} or {b}",
                "Bigger number?\n{a} or {b}", "Choose the greater.\n{a} or {b}", "Max of {a} and {b}?",
                "What is the maximum of {a} and {b}?", "Which one is bigger, {a} or {b}?",
                "Pick the bigger one.\n{a} or {b}"],
               ["Which is the bigger number, {a} or {b}?", "Tell me the larger number.\n{a} or {b}"]),
    "capital": (["What is the capital of {x}?", "Name the capital of {x}.", "Which city is the capital of {x}?",
                 "Tell me the capital city of {x}.", "What city is the capital of {x}?",
                 "What is the capital city of this country?\n{x}", "capital of {x}", "Do you know the capital of {x}?",
                 "Capital of {x}?", "Name this country's capital.\n{x}", "What is the capital?\n{x}",
                 "Where is the capital of {x}?",
                 "What's the capital of {x}?", "Name {x}'s capital.", "What city is {x} governed from?",
                 "Tell me the capital.\n{x}", "Capital city?\n{x}", "What is the capital city of {x}?",
                 "The capital of {x} is which city?", "In which city is the government of {x}?",
                 "Which capital belongs to {x}?", "Give the capital of {x}.",
                 "Name the capital of this country.\n{x}", "{x} has which city as its capital?"],
                ["What is {x}'s capital city?", "Which city is this country's capital?\n{x}"]),
    "animal": (["What family do {x} belong to?", "What kind of animals are {x}?", "Which animal family are {x} in?",
                "Tell me the family of {x}.", "Which family of animals do {x} belong to?",
                "What animal family is this?\n{x}", "family of {x}", "What are {x}?", "What family are {x}?",
                "What family is this animal in?\n{x}", "Name the family.\n{x}",
                "What animal family do {x} belong to?",
                "What family are {x} part of?", "{x} belong to which family?", "Which family includes {x}?",
                "Give the family of {x}.", "What group of animals are {x}?", "Animal family?\n{x}",
                "Which family?\n{x}", "Tell me the animal family.\n{x}", "Classify {x} by family.",
                "What family of animals are {x}?", "Say which family this is.\n{x}", "{x} are in which family?"],
               ["Name the animal family of {x}.", "To which family do these animals belong?\n{x}"]),
    "symbol": (["What is the chemical symbol for {x}?", "Give the chemical symbol of {x}.", "What is the symbol of {x}?",
                "Write the chemical symbol for {x}.", "Which symbol stands for {x}?",
                "What is the chemical symbol of this element?\n{x}", "symbol for {x}", "What is {x}'s symbol?",
                "Chemical symbol of {x}?", "Give this element's symbol.\n{x}", "What is the symbol?\n{x}",
                "How is {x} written in chemistry?",
                "What is the symbol for {x}?", "Which letters stand for {x}?", "Give the symbol for {x}.",
                "How do chemists write {x}?", "Element symbol?\n{x}", "Symbol, please.\n{x}",
                "What is the chemical symbol?\n{x}", "Write the symbol of {x}.", "What symbol does {x} have?",
                "Name the symbol of {x}.", "What letters represent {x}?", "Give the symbol.\n{x}"],
               ["Tell me the element symbol for {x}.", "Give the symbol of this chemical element.\n{x}"]),
    "opposite": (["What is the opposite of {x}?", "Give the opposite of {x}.", "Name the opposite of {x}.",
                  "What is the antonym of {x}?", "Tell me the opposite of {x}.",
                  "What is the opposite of this word?\n{x}", "opposite of {x}", "What's the opposite of {x}?",
                  "Opposite of {x}?", "Antonym of this word?\n{x}", "What is the opposite?\n{x}",
                  "What word means the opposite of {x}?",
                  "Give an antonym for {x}.", "What word is opposite to {x}?", "Opposite, please.\n{x}",
                  "Name the antonym of {x}.", "What is the antonym?\n{x}", "Say the opposite of {x}.",
                  "What means the opposite of {x}?", "Give the opposite word.\n{x}", "What's the antonym of {x}?",
                  "The opposite of {x} is what?", "Tell me the antonym of {x}.", "What is the contrary of {x}?"],
                 ["Which word is the opposite of {x}?", "Give me the antonym of this word.\n{x}"]),
}

FACT_TABLES = {
    "capital": CAPITALS,
    "animal": ANIMAL_FAMILIES,
    "symbol": CHEMICAL_SYMBOLS,
    "opposite": OPPOSITES,
}


# Training examples per family, measured (README): a 5-minute run of about 2,400 steps of 32 sees
# each about 2.5 times. Add and subtract stayed near 0% at any share, so they get few; upper and lower
# case made copy errors at 2,000 and get more; tables with many rows (opposites) get more than small ones.
TRAINING_EXAMPLES = {"reverse": 4000, "upper": 3000, "lower": 3000, "count": 3500, "spell": 3500, "add": 1000,
                     "subtract": 1000, "larger": 3000, "capital": 2000, "animal": 1000, "symbol": 1000,
                     "opposite": 2500, "faq": 1500}


# Answers a model must write letter by letter or digit by digit. A BPE token holds several letters and
# hides them, so these answers show their working: a word is spelled out first ("s-t-o-n-e: enots"),
# and a sum is worked column by column with its carries (see addition). Finetuning encodes them one
# character per token (the example's "char_level"), so the model writes letters it can see.
CHAR_LEVEL_FAMILIES = ("reverse", "upper", "lower", "count", "spell", "add", "subtract")


def skill_answer(family, w="", a=0, b=0):
    """The answer of a skill, from its word w (as the question gives it) or its numbers a and b."""
    spelled = "-".join(w)
    answers = {
        "reverse": lambda: f"{spelled}: {w[::-1]}",
        "upper": lambda: f"{spelled}: {w.upper()}",
        "lower": lambda: f"{spelled}: {w.lower()}",
        "count": lambda: f"{spelled}: {len(w)}",
        "spell": lambda: spelled,
        "add": lambda: addition(a, b),
        "subtract": lambda: subtraction(a, b),
        "larger": lambda: str(max(a, b)),
    }
    return answers[family]()


def addition(a, b):
    """a + b worked as on paper, from the ones column, with each carry written: 347 + 286 gives
    "7+6=13, 4+8+1=13, 3+2+1=6, so 633". Each step needs only two digits and a carry in view."""
    steps, carry = [], 0
    for x, y in column_digits(a, b):
        total = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
        carry = total // 10
    return ", ".join(steps) + f", so {a + b}"


def subtraction(a, b):
    """a - b (a >= b) worked as on paper, from the ones column, borrowing ten where a column's digit is
    too small: 634 - 286 gives "14-6=8, 13-8-1=4, 6-2-1=3, so 348"."""
    steps, borrow = [], 0
    for x, y in column_digits(a, b):
        borrowing = x - y - borrow < 0
        steps.append(f"{x + 10 * borrowing}-{y}" + (f"-{borrow}" if borrow else "") + f"={x + 10 * borrowing - y - borrow}")
        borrow = int(borrowing)
    return ", ".join(steps) + f", so {a - b}"


def column_digits(a, b):
    """The digit pairs of a and b from the ones column up, 0 where the shorter number has none."""
    da, db = str(a)[::-1], str(b)[::-1]
    width = max(len(da), len(db))
    return [(int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0) for i in range(width)]


def fact_answer(family, x):
    value = FACT_TABLES[family][x]
    return f"{x.capitalize()} are {value}." if family == "animal" else value


def example(phrasing, output, family, **fields):
    """Fill a phrasing's fields and split it at its newline into instruction and input."""
    instruction, _, input = phrasing.format(**fields).partition("\n")
    ex = {"instruction": instruction, "input": input, "output": output, "family": family}
    return {**ex, "char_level": True} if family in CHAR_LEVEL_FAMILIES else ex


def random_number(rng):
    """1, 2 and 3 digits equally often; uniform over 0-999 would make almost every number 3 digits."""
    digits = rng.choice((1, 2, 3))
    return rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits)


def number_pair(rng, family):
    a, b = random_number(rng), random_number(rng)
    if family == "subtract" and a < b:
        a, b = b, a  # answers stay non-negative
    if family == "larger" and a == b:
        b = a + 1
    return a, b


def skill_examples(family, phrasings, words, n, rng, avoid=frozenset()):
    """n distinct examples of a skill, on words from `words` (word skills) or fresh number pairs not in
    `avoid` (number skills). Returns (examples, inputs used)."""
    examples, used = {}, set()
    while len(examples) < n:
        phrasing = rng.choice(phrasings)
        if family in ("add", "subtract", "larger"):
            a, b = number_pair(rng, family)
            if (a, b) in avoid:
                continue
            used.add((a, b))
            if family in ("add", "larger"):
                used.add((b, a))  # the same question in the other order
            # A sum is worked in the order the question names its numbers ("Add 5 to 12": 5 first).
            first, second = (b, a) if family == "add" and phrasing.index("{b}") < phrasing.index("{a}") else (a, b)
            ex = example(phrasing, skill_answer(family, a=first, b=second), family, a=a, b=b)
        else:
            w = rng.choice(words)
            used.add(w)
            asked = w.upper() if family == "lower" else w  # lower case is asked of an upper-case word
            ex = example(phrasing, skill_answer(family, w=asked), family, w=w, W=w.upper())
        examples[ex["instruction"], ex["input"]] = ex
    return list(examples.values()), used


def kjv_words():
    """Common words of the King James Bible: 3 to 9 letters, seen in lower case at least 3 times (so
    no rare names), sorted. Thousands of inputs for the skills, so the model must learn each skill
    rather than remember the answer for each word."""
    counts = Counter(re.findall(r"\b[a-z]{3,9}\b", kjv_text()))
    return sorted(word for word, n in counts.items() if n >= 3)


def casual_forms(phrasing):
    """The phrasing as written, and as people type it: in lower case, without the final stop. (Four
    more forms, with a greeting, please or thanks, made prompts longer and learning slower: the
    5-minute run fitted even its training examples worse, README.)"""
    instruction, newline, input = phrasing.partition("\n")
    return [form + newline + input for form in (instruction, lower_case(instruction.rstrip(".?!")))]


def lower_case(text):
    """text in lower case, except its {fields}: {W} stands for an upper-case word."""
    parts = re.split(r"(\{\w+\})", text)  # odd positions hold the fields
    return "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))


def times_each(total, distinct):
    """How often each of `distinct` items comes so that there are about `total` examples; at least once."""
    return max(1, round(total / distinct))


def generate(seed=SEED, sizes=None, n_heldout=40):
    """(train, heldout) lists of examples. Same seed, same lists, on any machine.

    sizes: training examples per family, default TRAINING_EXAMPLES. A skill's examples are distinct:
    a skill must work on inputs never seen, and many different inputs, each seen once or twice, teach
    that better than a few seen many times. A fact table's rows (or the FAQ's answers) come equally
    often, each time in a phrasing drawn at random, so that every fact is seen often enough to be
    remembered and never tied to one wording."""
    sizes = TRAINING_EXAMPLES | (sizes or {})
    rng = random.Random(seed)
    words = kjv_words()
    rng.shuffle(words)
    heldout_words, train_words = words[: len(words) // 5], words[len(words) // 5:]
    train, heldout = [], []
    for family, (train_phrasings, heldout_phrasings) in PHRASINGS.items():
        train_phrasings = [form for phrasing in train_phrasings for form in casual_forms(phrasing)]
        if family in FACT_TABLES:
            rows = list(FACT_TABLES[family])
            train += [example(rng.choice(train_phrasings), fact_answer(family, x), family, x=x)
                      for x in rows for _ in range(times_each(sizes[family], len(rows)))]
            held = [example(p, fact_answer(family, x), family, x=x) for x in rows for p in heldout_phrasings]
            heldout += rng.sample(held, min(n_heldout, len(held)))
        else:
            held, held_inputs = skill_examples(family, heldout_phrasings, heldout_words, n_heldout, rng)
            heldout += held
            train += skill_examples(family, train_phrasings, train_words, sizes[family], rng, held_inputs)[0]
    # FAQ: the question and all paraphrases but the last train; the last paraphrase is held out.
    faq = load_faq()
    for entry in faq:
        questions = [entry.question, *entry.paraphrases]
        forms = [form for q in questions[:-1] for form in casual_forms(q)]
        rng.shuffle(forms)  # then taken in turn: with as many examples as forms, every question trains
        train += [{"instruction": forms[i % len(forms)], "input": "", "output": entry.answer, "family": "faq"}
                  for i in range(times_each(sizes["faq"], len(faq)))]
        heldout.append({"instruction": questions[-1], "input": "", "output": entry.answer, "family": "faq"})
    rng.shuffle(train)
    return train, heldout


INSTRUCT_FILES = "a .json or .jsonl file"


def load_alpaca(path):
    """A user's instruction set, as examples like generate's (family "all" unless a record names
    one). Raises DataError naming the file and the line (or record) of the first bad one."""
    raw = read_bytes(path, INSTRUCT_FILES)
    text = decode_utf8(path, raw)
    if text.lstrip().startswith("["):
        records = [(f"{path}: record {i}", record) for i, record in enumerate(json_list(path, text), start=1)]
    elif single_object(text):
        raise DataError(f"{path}: expected a JSON list of objects (or one object per line), found a single object")
    else:
        records = [(f"{path}:{number}", record) for number, record in parse_jsonl(path, raw)[0]]
    if not records:
        raise DataError(f"{path}: no examples found (expected a JSON list or JSON lines of instruction/output)")
    return [alpaca_example(where, record) for where, record in records]


def json_list(path, text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None


def single_object(text):
    """Whether text is one JSON object written over several lines (pretty-printed), which is neither
    a list nor JSON lines."""
    if "\n" not in text.strip():
        return False  # an object on one line is a JSON lines file of one example
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def alpaca_example(where, record):
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with instruction and output (input is optional), "
                        f"found {json_type(record)}")
    missing = [k for k in ("instruction", "output") if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}; "
                        f"each example needs instruction and output (input is optional)")
    fields = {k: record.get(k, "") for k in ("instruction", "input", "output")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key} must be a string, got {type(value).__name__}")
    if not fields["instruction"].strip() or not fields["output"].strip():
        raise DataError(f"{where}: empty instruction or output")
    return {**fields, "family": str(record.get("family", "all"))}


def main():
    train, heldout = generate()
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instruct")
    os.makedirs(out_dir, exist_ok=True)
    for name, examples in (("train", train), ("val", heldout)):
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(ex) + "\n" for ex in examples)
        print(f"wrote {len(examples)} examples to {os.path.join(out_dir, name + '.jsonl')}")


if __name__ == "__main__":
    main()
