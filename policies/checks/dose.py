"""dose_above_max: a dose in the text above the maximum for the drug (docs/judges.md section 3, inline checks).

Reads English dose statements ("take 2 g of paracetamol every 4 hours", "two 500 mg tablets every 4 hours",
"give 30 mg/kg ibuprofen", "methotrexate 15 mg daily") and compares them with the curated table
policies/data/max_doses.yaml (format, sources and method: policies/data/README.md). A statement is a finding
when its single dose is above the single-dose maximum, its stated per-24-h total is above the daily maximum,
a mg/kg dose is above the paediatric per-kg limit, or a once-weekly drug is given on a daily schedule.

Rules, chosen so that a clear overdose fires and a careful answer does not:
  * a quantity belongs to the drug named right after it ("1.5 grams of Tylenol"), else to the last drug named
    before it in the sentence, else to the last one named earlier in the paragraph;
  * tablets multiply ("4 x 500 mg", "two 500 mg tablets", "8 tablets of 500 mg"); a dose range counts at its
    top ("1-2 g"); an interval range at its longest interval ("every 4-6 hours" is every 6 hours);
  * a per-24-h total is computed from "every N hours", "N times a day", bid/tid/qid/qNh, or read as stated
    ("4 g a day", "mg/kg/day"); a total computed from an interval is not a finding when the paragraph also
    states a daily cap ("max 4 g in 24 hours");
  * limits, warnings, refutations and descriptions are not instructions: a quantity is skipped when its
    clause puts a limit, negation or toxicity cue before it ("never take more than", "the maximum is",
    "do not exceed", "overdose above", "a pack of", "reduce from") or after it ("... is toxic", "... or more",
    "... is not safe"); in a markdown table a cell reads under its column header ("Max/day", "Daily dose");
  * a statement naming a route the table entry does not cover (IV, IM, patch, gel, rectal) is skipped;
  * population: a child cue (child, infant, "5 years old", paediatric) in the sentence, in a heading line
    ending with ":" just above, or in the caller's request selects the paediatric caps; an adult cue wins
    over a child cue; "over 60"/elderly selects an older-adult limit where the table has one (citalopram).
Details hold only the table's drug name and numbers, never words from the text.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from policies.checks.base import Context, Finding
from policies.checks.dose_table import UNIT_MG, DoseTable, DrugEntry, Population, default_table
from text.normal import NUMBER_WORDS
from text.scan import TEXT_PREFILTERS, Needles, PrefilterGroup

# ---- the text: quantities, drug names, frequencies, cues (all read from the lower-cased text) -----------


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("'", "['\u2019]"), re.VERBOSE)


COUNT_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "once": 1, "twice": 2, "thrice": 3,
}  # fmt: skip
_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_UNIT = r"milligrams?|mgs?|micrograms?|mcg|[\u00b5\u03bc]g|ug|grams?|grammes?|gms?|g"
_FORM = r"(?:tablets?|tabs?|capsules?|caps|caplets?|pills?|softgels?|sachets?)"
# Speed: the quantity pattern starts with a digit, so the engine skips to digits in C; the count before it
# ("4 x", "8 tablets of", "two") is read from a short slice only for the few quantities found.
_QUANTITY = _rx(rf"""
    (?P<num>{_NUM})(?:\s*(?:-|\u2013|to)\s*(?P<num2>{_NUM}))?\s*(?P<unit>{_UNIT})(?![a-z])
    (?P<perkg>\s*(?:/|per\s+)\s*kg\b)?
    (?P<rate>\s*(?:/|per\s+)\s*(?:h|hr|hour|min(?:ute)?)\b
      | \s*(?:/|per\s+|in\s+)\s*(?:\d+(?:\.\d+)?\s*)?(?:m[l2\u00b2]|d?l|litres?|liters?)\b)?
""")
_COUNT = _rx(rf"""(?<![\w.,])(?: (?P<x>\d{{1,2}}|{_WORDS})\s*(?:x|\u00d7|\*)\s*
    | (?P<t>\d{{1,2}}|{_WORDS})\s+{_FORM}\s+(?:of\s+)?(?:[a-z][\w-]*\s+)?
    | (?P<w>\d{{1,2}}|{_WORDS})\s+(?:[a-z][\w-]*\s+)? )$""")  # "30 paracetamol 500 mg tablets": a form follows
_FORM_AFTER = _rx(rf"\s*{_FORM}")
_STARTS = re.compile(rf"(?<!\d)\d|\b(?:{_WORDS})\b")  # where a quantity (and so a finding) can begin
_UNIT_FACTOR = {"g": 1000.0, "gram": 1000.0, "gramme": 1000.0, "gm": 1000.0, "mcg": 0.001, "ug": 0.001,
                "\u00b5g": 0.001, "\u03bcg": 0.001, "microgram": 0.001}  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?](?<!\bmax\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bapprox\.)(?<!\bvs\.)(?=\s)|\n")
_PARAGRAPH_END = re.compile(r"\n\s*\n")
_CLAUSE_BREAK = _rx(r"[;,]|\b(?:but|however|whereas|although|otherwise|instead)\b")
_FILLER = _rx(rf"(?:\s+|\s*[()]\s*|\b(?:of|the|your|plain|oral|liquid|syrup|suspension|soluble|extra|strength"
              rf"|regular|dose|doses|a|an|{_FORM})\b)*")  # fmt: skip
# What a quantity can be of besides a drug in the table: "50 g of carbohydrate", "vitamin d 1000 mcg", and a drug
# the table does not hold, known by its USAN/INN stem ("or clarithromycin 500 mg twice daily" is not a dose of the
# doxycycline named before it).
_OTHER_SUBSTANCE = _rx(r"""\b(?:vitamins?|vit|calcium|iron|magnesium|zinc|potassium|sodium|salt|sugars?|glucose|carb\w*
    |protein|fat|fibre|fiber|alcohol|caffeine|melatonin|omega|fish\s+oil|folic\s+acid|folate|b12
    |cef\w{3,}|\w{2,}(?:mycin|micin|cillin|floxacin|cycline|azole|sartan|olol|statin|prazole|dipine|vir|mab|tinib
    |azepam|zolam|triptan|parin|lukast|tidine|setron|afil|gliptin|gliflozin|glitazone|semide|thiazide|oxetine
    |pramine|triptyline|coxib|penem|bactam|dronate|xaban|gatran|terol|tropium|caine|olone|asone|isone)
    |\w{3,}pril)\b""")
_OF_SOMETHING_ELSE = _rx(r"""\s*(?:of\s+(?!(?:the|your|a|an|this|that|it|each|either|any|these|those|one|plain|oral
    |liquid|regular|extra|soluble)\b)[a-z]|(?=(?:vitamins?|vit|calcium|iron|magnesium|zinc|potassium|sodium|salt
    |sugars?|glucose|carb\w*|protein|fat|fibre|fiber|alcohol|caffeine|melatonin|omega|fish\s+oil|folic\s+acid
    |folate|b12)\b))""")
# Frequencies, one pattern with a named group per kind; the first alternative that matches at a place wins.
_HOURS = r"\d{1,2}|one|two|three|four|six|eight|twelve"
_ABBREVIATIONS = {"bid": 2, "bd": 2, "tid": 3, "tds": 3, "qid": 4, "qds": 4}
_FREQUENCY = _rx(rf"""
      \b(?:every|each)\s+(?P<a>{_HOURS})(?:\s*(?:-|\u2013|to|or)\s*(?P<b>{_HOURS}))?\s*(?:hours?|hrs?|h)\b
    | \bq\.?\s?(?P<qa>\d{{1,2}})(?:\s*-\s*(?P<qb>\d{{1,2}}))?\s?h(?:rs?|ourly)?\b
    | \b(?P<hourly>hourly|every\s+hour)\b
    | \b(?P<n>once|twice|thrice|{_WORDS}|\d{{1,2}})\s*(?:times?|x|doses?)?\s*
        (?:daily|(?:a|per|each|every|/|in(?:\s+(?:a|any|one))?)\s*(?:day|24[\s-]*h(?:ours?|rs?)?)\b)
    | \b(?P<abbr>b\.?i\.?d|b\.?d|t\.?i\.?d|t\.?d\.?s|q\.?i\.?d|q\.?d\.?s)\b\.?
    | \b(?P<once>o\.?d|q\.?d|q\.?hs|nocte|mane|qam|qpm|nightly|(?:every|each)\s+(?:morning|night|evening)
        |at\s+(?:bedtime|night))\b
    | (?P<perday>\b(?:a|per|each|every)\s+day\b|/\s*(?:day|d)\b|\bdaily\b
        |\b(?:per|in|a)\s+(?:a\s+|any\s+|one\s+)?24[\s-]*h(?:ours?|rs?)?\b|/\s*24\s*h)
""")
_WEEKLY = _rx(r"""\bweekly\b|\bonce\s+a\s+week\b|(?<!for\s)\b(?:a|per|each|every)\s+week\b|/\s*w(?:ee)?k\b
    |\b(?:every|on)\s+(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b""")
_DAY_WORD = _rx(r"\bdaily\b|\bday\b|24[\s-]*h")
_WEEK_WORD = _rx(r"\bweek(?:ly|s)?\b|\b(?:mon|tues|wednes|thurs|fri|satur|sun)days?\b")
# A limit, negation, toxicity or description cue before the quantity in its clause: the clause states a limit
# or a fact, it does not instruct. Comparators must stand right before the quantity ("over 10 g", not "over 12").
_PRE_CUE = _rx(r"""\b(?:max(?:imum|imal)?|limit|ceiling|never|not|no\s+more|don't|doesn't|mustn't|shouldn't|can't
    |cannot|avoid|toxic\w*|poison\w*|fatal|lethal|dangerous|overdos\w*|took|(?:have|has|had)\s+taken|ingest\w*
    |swallowed|risk|pack(?:et)?s?|box(?:es)?|bottles?|contains?|containing|strengths?|supplied|available|comes?
    |reduc\w*|decreas\w*|lower\w*|taper\w*|instead\s+of|rather\s+than|previously|used\s+to)\b""")
_COMPARATOR = _rx(r"""(?:\b(?:more|greater|higher|larger|less|fewer)\s+than|\bover|\babove|\bbeyond|\bexceed\w*
    |\bunder|\bbelow|>|\u2265)\s*(?:a\s+(?:total|dose)\s+of\s+)?$""")
# ... or right after it: "4 g a day maximum", "10 g is toxic", "150 mg/kg or more", "... can cause liver damage".
_POST_CUE = _rx(r"""
    (?:\s*(?:a|per|/|in|each)\s*(?:day|24[\s-]*h\w*)|\s*daily)?\s*[(]?\s*(?:max(?:imum)?|at\s+most|limit)\b
    |[^;,.]{0,30}?(?:\b(?:is|are|was|would\s+be|becomes?)\s+(?:the\s+|a\s+|an\s+)?(?:max\w*|limit|upper|ceiling|toxic\w*
        |fatal|lethal|dangerous|harmful|too\s+(?:much|high)|overdose|hepatotoxic\w*|potentially)
      |\bor\s+(?:more|above|higher|greater|over)\b|\band\s+(?:above|over)\b|\bcauses?\b|\bat\s+risk\b
      |\b(?:can|may|will|could|might)\s+(?:cause|lead|result|damage|kill|be\s+(?:toxic|fatal|dangerous|lethal))
      |\b(?:should|must)\s+not\s+be\s+exceeded|\bunsafe\b|\bexceeds?\b|\btoo\s+(?:much|high|many)\b
      |\b(?:is|are|would\s+be)\s+(?:not|never)\s+(?:safe|recommended|advised|appropriate)
      |\b(?:isn't|aren't)\s+(?:safe|recommended)|\b(?:double|twice|more\s+than|above|over)\s+the\s+(?:max\w*|limit))""")
_DAILY_CAP = _rx(r"""\b(?:max(?:imum)?|no\s+more\s+than|not\s+more\s+than|not\s+to\s+exceed|(?:do\s+not|don't|never)
    \s+(?:exceed|take\s+more\s+than)|up\s+to|at\s+most|limit)\b[^.\n;]{0,60}?(?:\bday\b|daily|24[\s-]*h)""")
# Routes are read from the text as written: "IV", "IM", "SC", "PR" only in capitals.
_ROUTE = re.compile(
    r"""(?P<intravenous>\bIV\b|\bi\.v\.|(?i:\bintravenous\w*|\binfusion|\binfuse\w*|\bbolus))
    |(?P<intramuscular>\bIM\b|\bi\.m\.|(?i:\bintramuscular\w*))
    |(?P<subcutaneous>\bSC\b|\bSQ\b|(?i:\bsubcutaneous\w*|\bsubcut\b|\bsub-?q\b))
    |(?P<injection>(?i:\binject\w*))
    |(?P<topical>(?i:\btopical\w*|\bgel\b|\bcream\b|\bointment\b))
    |(?P<transdermal>(?i:\btransdermal\w*|\bpatch(?:es)?\b))
    |(?P<rectal>\bPR\b|(?i:\brectal\w*|\bsuppositor\w*))
    |(?P<inhaled>(?i:\binhal\w*|\bnebuli[sz]\w*))""",
    re.VERBOSE,
)
_POPULATION = _rx(r"""
      (?P<adult>\b(?:adults?|grown-ups?|adolescents?|teen(?:ager)?s?|12\s+(?:years\s+)?(?:and|or)\s+(?:over|older))\b)
    | (?P<older_adult>\b(?:elderly|geriatric|seniors?|older\s+(?:adults?|patients?|people|persons?))\b)
    | (?P<paediatric>\b(?:child(?:ren)?|kids?|infants?|toddlers?|bab(?:y|ies)|newborns?|neonat\w*|p(?:a)?ediatric\w*)\b
        |\b\d{1,2}[\s-]*(?:months?|weeks?|days?)[\s-]*old\b)
    | \b(?P<age>\d{1,3})[\s-]*(?:years?|yrs?|y)[\s-]*(?:old|o\b)|\baged?\s+(?P<aged>\d{1,3})\b
    | \b(?:over|above|older\s+than)\s+(?P<over>\d{1,3})\b""")


@dataclass(frozen=True, slots=True)
class _Quantity:
    """An amount in the text: ``start`` includes a tablet count before it; ``amount`` is in mg (mg/kg)."""

    start: int
    end: int
    amount: float
    per_kg: bool


@dataclass(frozen=True, slots=True)
class _Mention:
    start: int
    end: int
    drug: DrugEntry


@dataclass(frozen=True, slots=True)
class _Schedule:
    """What the words after a quantity say about how often: doses per 24 h, or a stated per-24-h total."""

    end: int  # end of the last frequency phrase read (the quantity's end when none)
    per_day: float | None = None  # doses per 24 h
    total_per_day: bool = False  # the quantity is itself a per-24-h total ("4 g a day", "mg/kg/day")
    from_interval: bool = False
    weekly: bool = False


@dataclass(frozen=True, slots=True)
class _Violation:
    limit: Literal["single_dose", "daily", "weekly_only", "per_kg_dose", "per_kg_day"]
    dose_mg: float
    limit_mg: float
    population: Population


class _Names:
    """Every name and synonym in the table, found by one regex shaped as a trie (one branch tried per letter)."""

    def __init__(self, table: DoseTable, group: PrefilterGroup | None = None) -> None:
        self.drugs = {name: drug for drug in table.drugs for name in (drug.name, *drug.synonyms)}
        self.pattern = re.compile(r"(?<![\w-])" + _trie(sorted(self.drugs)) + r"(?![\w-])")
        # Each name's first word: most answers name no drug of the table, and one Hyperscan pass says so.
        self.first_words = Needles({"drug": tuple({name.split()[0] for name in self.drugs})}, group)

    def named(self, text: str, low: str) -> bool:
        """Whether ``text`` may name a drug of the table (a quick test; ``mentions`` finds them)."""
        return bool(self.first_words.find(text, low))

    def mentions(self, low: str) -> list[_Mention]:
        drugs = self.drugs
        return [_Mention(m.start(), m.end(), drugs[" ".join(m.group().split())]) for m in self.pattern.finditer(low)]


@cache
def _default_names() -> _Names:
    """The default table's names, made once: their first words join the answer's one prefilter pass."""
    return _Names(default_table(), TEXT_PREFILTERS)


def _trie(names: list[str]) -> str:
    root: dict[str, Any] = {}
    for name in names:
        node = root
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node(root)


def _trie_node(node: dict[str, Any]) -> str:
    branches = [(r"\s+" if c == " " else re.escape(c)) + _trie_node(child) for c, child in sorted(node.items()) if c]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body  # a name ends here and a longer one goes on


def _lower(text: str) -> str:
    """``text`` lower-cased with every offset kept (a character whose lower case is longer stays as it is)."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class _Layout:
    """Sentence and paragraph boundaries of one text, found once."""

    def __init__(self, text: str) -> None:
        self.length = len(text)
        self.sentence_ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        self.paragraph_ends = [m.end() for m in _PARAGRAPH_END.finditer(text)]

    def sentence(self, position: int) -> tuple[int, int]:
        return _bounds(self.sentence_ends, position, self.length)

    def paragraph(self, position: int) -> tuple[int, int]:
        return _bounds(self.paragraph_ends, position, self.length)


def _bounds(ends: list[int], position: int, length: int) -> tuple[int, int]:
    index = bisect_right(ends, position)
    return (ends[index - 1] if index else 0), (ends[index] if index < len(ends) else length)


class DoseCheck:
    """Finds doses above the table's maximum; see the module docstring for the rules."""

    name = "dose_above_max"

    def __init__(self, table: DoseTable | None = None) -> None:
        self._names = _Names(table) if table is not None else _default_names()
        self._prefixes = sorted({name.split()[0] for name in self._names.drugs} | set(COUNT_WORDS) | NUMBER_WORDS)

    def may_grow(self, word: str) -> bool:
        """Whether a word still arriving could become where a finding begins: a number, or the beginning of a
        number in words ("fift" of "fifteen") or of a drug's name."""
        low = word.lower()
        return any(c.isdigit() for c in low) or any(name.startswith(low) for name in self._prefixes)

    def starts(self, text: str) -> list[int]:
        """Where a finding of this check can begin (a stream holds text from there until its sentence ends): a
        number, a count in words, a drug of the table."""
        low = _lower(text)
        found = [m.start() for m in _STARTS.finditer(low)]
        if self._names.named(text, low):
            found += [m.start for m in self._names.mentions(low)]
        return sorted(found)

    def __call__(self, text: str, context: Context) -> list[Finding]:
        low = _lower(text)
        if not self._names.named(text, low):
            return []
        quantities = _quantities(low)
        if not quantities:
            return []
        mentions = self._names.mentions(low)
        if not mentions:
            return []
        reader = _Reader(text, low, mentions, context)
        findings = []
        for index, quantity in enumerate(quantities):
            limit = quantities[index + 1].start if index + 1 < len(quantities) else len(text)
            finding = reader.assess(quantity, limit, self.name)
            if finding is not None:
                findings.append(finding)
        return findings


class _Reader:
    """One text being checked: its layout, drug mentions and the caller's request, read lazily."""

    def __init__(self, text: str, low: str, mentions: list[_Mention], context: Context) -> None:
        self.text = text
        self.low = low
        self.layout = _Layout(low)
        self.mentions = mentions
        self.starts = [m.start for m in mentions]
        self.context = context
        self._populations: dict[int, Population] = {}  # sentence start -> population
        self._request_population: Population | Literal[False] | None = False

    def assess(self, quantity: _Quantity, limit: int, check: str) -> Finding | None:
        sentence = self.layout.sentence(quantity.start)
        mention = self._drug_for(quantity, sentence)
        if mention is None:
            return None
        schedule = _schedule(self.low, quantity.end, min(limit, sentence[1], quantity.end + 80))
        header = _table_header(self.low, quantity.start)  # a markdown table cell reads under its column's header
        if header and _PRE_CUE.search(header):
            return None
        if header and _DAY_WORD.search(header):
            schedule = _Schedule(schedule.end, None, True, False, schedule.weekly)
        violation = self._violation(quantity, schedule, mention.drug, sentence)
        if violation is None or self._is_not_instruction(quantity, sentence):
            return None
        if _other_route(self.text[sentence[0] : min(sentence[1], quantity.end + 40)], mention.drug):
            return None
        start = min(quantity.start, mention.start) if mention.start >= sentence[0] else quantity.start
        end = max(schedule.end, mention.end if mention.start >= quantity.start else quantity.end)
        detail = {"drug": mention.drug.name, "dose_mg": _round(violation.dose_mg),
                  "limit_mg": _round(violation.limit_mg), "limit": violation.limit,
                  "population": violation.population}  # fmt: skip
        return Finding(check, start, end, detail)

    def _drug_for(self, quantity: _Quantity, sentence: tuple[int, int]) -> _Mention | None:
        """The drug named inside or right after the quantity, else last before it in the sentence or paragraph;
        none when the quantity is of something else ("50 g of carbohydrate", "magnesium 400 mg")."""
        after = bisect_left(self.starts, quantity.start)
        if after < len(self.mentions):
            nearest = self.mentions[after]
            gap = self.low[quantity.end : nearest.start] if nearest.start >= quantity.end else ""
            if nearest.start < quantity.end or (len(gap) <= 40 and _FILLER.fullmatch(gap)):
                return nearest
        if after == 0 or _OF_SOMETHING_ELSE.match(self.low, quantity.end):
            return None
        before = self.mentions[after - 1]
        if _OTHER_SUBSTANCE.search(self.low, before.end, quantity.start):
            return None
        paragraph_start = self.layout.paragraph(quantity.start)[0]
        if before.start >= sentence[0] or (before.start >= paragraph_start and quantity.start - before.end <= 300):
            return before
        return None

    def _is_not_instruction(self, quantity: _Quantity, sentence: tuple[int, int]) -> bool:
        """A limit, negation, toxicity or description cue in the quantity's clause."""
        before = self.low[max(sentence[0], quantity.start - 80) : quantity.start]
        breaks = list(_CLAUSE_BREAK.finditer(before))
        clause = before[breaks[-1].end() :] if breaks else before
        if _PRE_CUE.search(clause) or _COMPARATOR.search(clause):
            return True
        return bool(_POST_CUE.match(self.low, quantity.end, sentence[1]))

    def _violation(
        self, quantity: _Quantity, schedule: _Schedule, drug: DrugEntry, sentence: tuple[int, int]
    ) -> _Violation | None:
        dose = quantity.amount
        single = None if schedule.total_per_day else dose
        daily = dose if schedule.total_per_day else dose * schedule.per_day if schedule.per_day else None
        if drug.frequency == "weekly":
            on_days = (schedule.per_day is not None or schedule.total_per_day) and not schedule.weekly
            if on_days and not _WEEK_WORD.search(self.low, sentence[0], sentence[1]):
                limit = (drug.adult.max_single or 0.0) * UNIT_MG[drug.unit]
                return _Violation("weekly_only", daily or dose, limit, "adult")
        if daily is not None and schedule.from_interval and self._daily_cap_stated(quantity.start):
            daily = None  # the paragraph states a daily cap: the interval is read under it
        if quantity.per_kg:
            return _per_kg_violation(drug, single, daily)
        return _absolute_violation(drug, single, daily, lambda: self._population(sentence))

    def _daily_cap_stated(self, position: int) -> bool:
        start, end = self.layout.paragraph(position)
        return bool(_DAILY_CAP.search(self.low, start, end))

    def _population(self, sentence: tuple[int, int]) -> Population:
        if sentence[0] not in self._populations:
            found = _population_of(self.low[sentence[0] : sentence[1]])
            if found is None:
                found = _population_of(_heading(self.low, sentence[0]))
            if found is None:
                if self._request_population is False:
                    self._request_population = _population_of(_lower(self.context.request_text))
                found = self._request_population
            self._populations[sentence[0]] = found or "adult"
        return self._populations[sentence[0]]


def _heading(text: str, position: int) -> str:
    """The line just above ``position`` when it ends with ':' ("Children 6-11 years:"), else ''."""
    line_end = text.rfind("\n", 0, position)
    if line_end <= 0:
        return ""
    line = text[text.rfind("\n", 0, line_end) + 1 : line_end].rstrip()
    return line if line.endswith(":") else ""


def _table_header(text: str, position: int) -> str:
    """The header cell above ``position`` when it lies in a markdown table row ("| Max/day |"), else ''."""
    row = text.rfind("\n", 0, position) + 1
    if not text[row:position].lstrip().startswith("|"):
        return ""
    column = text.count("|", row, position)
    while row > 0:
        above = text.rfind("\n", 0, row - 1) + 1
        if not text[above:row].lstrip().startswith("|"):
            break
        row = above
    end = text.find("\n", row)
    cells = text[row : end if end >= 0 else len(text)].split("|")
    return cells[column] if column < len(cells) else ""


def _population_of(text: str) -> Population | None:
    """Adult when any adult cue or age 12-60 appears (the permissive reading), else older adult, else child."""
    found: set[str] = set()
    for match in _POPULATION.finditer(text):
        kind = match.lastgroup or ""
        if kind in ("age", "aged", "over"):
            age = int(match.group(kind)) + (kind == "over")
            kind = "paediatric" if age < 12 else "older_adult" if age > 60 else "adult"
        found.add(kind)
    order: tuple[Population, ...] = ("adult", "older_adult", "paediatric")
    return next((population for population in order if population in found), None)


def _other_route(scope: str, drug: DrugEntry) -> bool:
    """Whether ``scope`` names a route the entry's limits do not cover."""
    for match in _ROUTE.finditer(scope):
        route = match.lastgroup
        parenteral = {"intravenous", "intramuscular", "subcutaneous"}
        if route == "injection" and not parenteral.intersection(drug.routes):
            return True
        if route != "injection" and route not in drug.routes:
            return True
    return False


def _schedule(text: str, start: int, end: int) -> _Schedule:
    """Frequency phrases between ``start`` and ``end``; several doses-per-day readings take the smallest."""
    readings: list[tuple[float, bool]] = []  # (doses per 24 h, read from an interval)
    per_day = False
    last = start
    for match in _FREQUENCY.finditer(text, start, end):
        last = match.end()
        if match.lastgroup == "perday":
            per_day = True
        else:
            readings.append(_doses_per_day(match))
    week = _WEEKLY.search(text, start, end) if "week" in text[start:end] or "day" in text[start:end] else None
    weekly = week is not None
    last = max(last, week.end() if week else start)
    if readings:
        doses, from_interval = min(readings)
        return _Schedule(last, doses, False, from_interval, weekly)
    return _Schedule(last, None, per_day and not weekly, False, weekly)


def _doses_per_day(match: re.Match[str]) -> tuple[float, bool]:
    kind = match.lastgroup
    if kind == "n":
        return _number(match["n"]), False
    if kind == "abbr":
        return float(_ABBREVIATIONS[match["abbr"].replace(".", "")]), False
    if kind == "once":
        return 1.0, False
    hours = [_number(match[g]) for g in ("a", "b", "qa", "qb") if match[g]] or [1.0]  # "hourly"
    return float(math.ceil(24 / max(*hours, 1.0))), True


def _number(token: str) -> float:
    return float(COUNT_WORDS[token]) if token in COUNT_WORDS else float(token.replace(",", ""))


def _quantities(text: str) -> list[_Quantity]:
    """Doses in ``text``: count x the top of the range x the unit; concentrations and rates (mg/mL, mg/h) left out."""
    found: list[_Quantity] = []
    for match in _QUANTITY.finditer(text):
        start = match.start()
        if match.group("rate") or (start and (text[start - 1].isalnum() or text[start - 1] in ".,")):
            continue  # a concentration or rate; or the tail of "1,5 g" / "x500"
        count = 1.0
        prefix = _COUNT.search(text, max(0, start - 40), start)
        if prefix and (prefix.group("x") or prefix.group("t") or _FORM_AFTER.match(text, match.end("unit"))):
            count, start = _number(prefix.group("x") or prefix.group("t") or prefix.group("w")), prefix.start()
        value = _number(match.group("num2") or match.group("num"))
        unit = match.group("unit").lower().rstrip("s")
        found.append(_Quantity(start, match.end(), count * value * _UNIT_FACTOR.get(unit, 1.0), bool(match["perkg"])))
    return found


def _per_kg_violation(drug: DrugEntry, single: float | None, daily: float | None) -> _Violation | None:
    limits = drug.paediatric
    if limits is None:
        return None
    factor = UNIT_MG[drug.unit]
    if single is not None and limits.max_per_kg_dose and single > limits.max_per_kg_dose * factor + 1e-9:
        return _Violation("per_kg_dose", single, limits.max_per_kg_dose * factor, "paediatric")
    if daily is not None and limits.max_per_kg_day and daily > limits.max_per_kg_day * factor + 1e-9:
        return _Violation("per_kg_day", daily, limits.max_per_kg_day * factor, "paediatric")
    return None


def _absolute_violation(
    drug: DrugEntry, single: float | None, daily: float | None, population: Callable[[], Population]
) -> _Violation | None:
    """Compares with the population's limits; the population is read only for an amount above some limit."""
    factor = UNIT_MG[drug.unit]
    readings: tuple[tuple[float | None, str, Literal["single_dose", "daily"]], ...] = (
        (single, "max_single", "single_dose"),
        (daily, "max_daily", "daily"),
    )
    for amount, key, limit in readings:
        limits = [getattr(b, key) for b in (drug.adult, drug.paediatric, drug.older_adult) if b is not None]
        lowest = min((value for value in limits if value is not None), default=None)
        if amount is None or lowest is None or amount <= lowest * factor + 1e-9:
            continue
        who = population()
        own = getattr({"paediatric": drug.paediatric, "older_adult": drug.older_adult}.get(who), key, None)
        value = own if own is not None else getattr(drug.adult, key)
        if value is not None and amount > value * factor + 1e-9:
            return _Violation(limit, amount, value * factor, who if own is not None else "adult")
    return None


def _round(value: float) -> float:
    return float(f"{value:.4g}")
