"""Clinical fact extraction by rules, for the CPU fidelity judge ``cef-lite`` (docs/judges.md section 1).

``extract(text)`` returns the facts a text states, each a (kind, key, value, negated, sentence_index):

  * ``dose``      key: the drug it belongs to (nearest in the sentence) or the unit; value "40 mg", "5 mg/kg"
  * ``frequency`` key: the drug or "frequency"; value normalised: "bid", "tid", "qid", "daily", "q8h", "prn"
  * ``lab``       key: normalised test name ("k", "bp", "ef"); value "3.1", "150/90", "35%"
  * ``percent``   key "percent"; value "20%" (a percentage not attached to a known test)
  * ``measure``   key: the unit ("days", "cm", "mmhg"); value "5 days"
  * ``age``       key "age"; value "72"
  * ``date``      key "date"; value as written, lower-cased
  * ``drug``, ``diagnosis``, ``finding``, ``organism``  key: normalised name; value "present"
  * ``laterality`` key: the word it qualifies ("knee", "lobe"); value "left", "right" or "bilateral"

Concepts (drugs, diagnoses, findings, organisms) carry NegEx-style negation: a trigger ("no", "denies",
"without", "negative for", "not", "ruled out") a few words before them in the same clause, or "was ruled
out" / "excluded" just after. Abbreviations are expanded first (``normalise``), so "pt w/o CP" and "patient
without chest pain" give the same facts. Rules only: paraphrase and reasoning are out of reach.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PRESENT = "present"


@dataclass(frozen=True, slots=True)
class Fact:
    """One clinical statement: two facts "answer" the same question when their (kind, key) are equal."""

    kind: str
    key: str
    value: str
    negated: bool
    sentence_index: int


# Expanded before matching; replacements are lower case (matching runs on lower-cased text anyway).
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"\bpts\b", "patients"),
    (r"\bpt\b", "patient"),
    (r"\bh/o\b", "history of"),
    (r"\bc/o\b", "complains of"),
    (r"\bs/p\b", "status post"),
    (r"\bw/o\b", "without"),
    (r"\bw/", "with "),
    (r"\b(?:y/o|y\.o\.|yo|yrs?\s+old)(?=\W|$)", "year-old"),
    (r"\bED\b", "emergency department"),
    (r"\bb\.i\.d\.?|\btwice\s+(?:daily|a\s+day)\b", "bid"),
    (r"\bt\.i\.d\.?|\b(?:three\s+times|thrice)\s+(?:daily|a\s+day)\b", "tid"),
    (r"\bq\.i\.d\.?|\bfour\s+times\s+(?:daily|a\s+day)\b", "qid"),
    (r"\bq\.?d\.?(?=\s|$)|\bonce\s+(?:daily|a\s+day)\b|\bevery\s+day\b|\bOD\b", "daily"),
    (r"\bp\.r\.n\.?|\bas\s+needed\b", "prn"),
    (r"\bq\.h\.s\.?|\bat\s+(?:night|bedtime)\b", "qhs"),
    (r"\bSOB\b", "shortness of breath"),
    (r"\bCP\b", "chest pain"),
    (r"\bHTN\b", "hypertension"),
    (r"\bT2DM\b|\bDM\b", "diabetes"),
    (r"\bMI\b|\bheart\s+attack\b", "myocardial infarction"),
    (r"\bCHF\b|\bHF\b", "heart failure"),
    (r"\bA-?fib\b|\bAF\b", "atrial fibrillation"),
    (r"\bPE\b", "pulmonary embolism"),
    (r"\bDVT\b", "deep vein thrombosis"),
    (r"\bCKD\b", "chronic kidney disease"),
    (r"\bAKI\b", "acute kidney injury"),
    (r"\bUTI\b", "urinary tract infection"),
    (r"\bCVA\b", "stroke"),
    (r"\bN/V\b", "nausea and vomiting"),
)
_ABBREVIATIONS = tuple((re.compile(p, re.IGNORECASE), r) for p, r in ABBREVIATIONS)
_EVERY_HOURS = re.compile(r"\bevery\s+(\d{1,2})\s*(?:hours|hrs?|h)\b", re.IGNORECASE)

DRUGS: tuple[str, ...] = (
    "acetaminophen", "paracetamol", "ibuprofen", "naproxen", "diclofenac", "aspirin", "celecoxib", "ketorolac",
    "morphine", "oxycodone", "hydromorphone", "fentanyl", "tramadol", "codeine", "methadone", "buprenorphine",
    "naloxone", "metformin", "insulin", "glipizide", "gliclazide", "glimepiride", "pioglitazone", "liraglutide",
    "semaglutide", "dulaglutide", "exenatide", "furosemide", "bumetanide", "torsemide", "hydrochlorothiazide",
    "chlorthalidone", "indapamide", "spironolactone", "eplerenone", "amiloride", "acetazolamide", "mannitol",
    "digoxin", "amiodarone", "sotalol", "flecainide", "dronedarone", "diltiazem", "verapamil", "adenosine",
    "warfarin", "heparin", "clopidogrel", "ticagrelor", "prasugrel", "dabigatran", "alteplase", "tenecteplase",
    "nitroglycerin", "isosorbide", "hydralazine", "clonidine", "doxazosin", "prazosin", "tamsulosin",
    "finasteride", "sildenafil", "levothyroxine", "methimazole", "propylthiouracil", "prednisone",
    "prednisolone", "methylprednisolone", "hydrocortisone", "dexamethasone", "fludrocortisone", "salbutamol",
    "albuterol", "ipratropium", "tiotropium", "budesonide", "fluticasone", "montelukast", "theophylline",
    "amoxicillin", "ampicillin", "penicillin", "piperacillin", "tazobactam", "cefazolin", "ceftriaxone",
    "cefuroxime", "cephalexin", "cefepime", "ceftazidime", "meropenem", "imipenem", "ertapenem", "aztreonam",
    "vancomycin", "linezolid", "daptomycin", "doxycycline", "tetracycline", "minocycline", "trimethoprim",
    "sulfamethoxazole", "nitrofurantoin", "metronidazole", "clindamycin", "rifampin", "rifampicin",
    "isoniazid", "ethambutol", "pyrazinamide", "acyclovir", "valacyclovir", "oseltamivir", "remdesivir",
    "fluconazole", "nystatin", "amphotericin", "sertraline", "fluoxetine", "citalopram", "escitalopram",
    "paroxetine", "venlafaxine", "duloxetine", "mirtazapine", "bupropion", "trazodone", "amitriptyline",
    "nortriptyline", "lithium", "quetiapine", "olanzapine", "risperidone", "haloperidol", "aripiprazole",
    "clozapine", "lorazepam", "diazepam", "midazolam", "alprazolam", "clonazepam", "zolpidem", "melatonin",
    "levetiracetam", "phenytoin", "valproate", "carbamazepine", "lamotrigine", "gabapentin", "pregabalin",
    "topiramate", "donepezil", "memantine", "levodopa", "carbidopa", "ondansetron", "metoclopramide",
    "prochlorperazine", "loperamide", "lactulose", "senna", "docusate", "bisacodyl", "sucralfate",
    "allopurinol", "colchicine", "febuxostat", "methotrexate", "hydroxychloroquine", "azathioprine",
    "tacrolimus", "cyclosporine", "mycophenolate", "tamoxifen", "letrozole", "anastrozole", "potassium",
    "magnesium", "calcium", "ferrous", "folic", "cyanocobalamin", "thiamine", "epinephrine", "norepinephrine",
    "dopamine", "dobutamine", "vasopressin", "phenylephrine", "atropine", "ketamine", "propofol", "lidocaine",
)  # fmt: skip
_DRUGS = frozenset(DRUGS)
_DRUG_SUFFIX = re.compile(
    r"[a-z]{2,}(?:pril|sartan|olol|statin|mab|cillin|mycin|floxacin|azole|tidine|parin|xaban|gliptin|gliflozin"
    r"|dipine)"
)
# Minerals that are drugs only when dosed ("potassium 20 mEq"); as lab names ("potassium 3.1") they are tests.
_LAB_DRUGS = frozenset({"potassium", "magnesium", "calcium"})

DIAGNOSES: tuple[str, ...] = (
    "pneumonia", "sepsis", "septic shock", "myocardial infarction", "stroke", "transient ischemic attack",
    "diabetes", "hypertension", "heart failure", "atrial fibrillation", "pulmonary embolism",
    "deep vein thrombosis", "chronic kidney disease", "acute kidney injury", "copd", "asthma", "cellulitis",
    "urinary tract infection", "pyelonephritis", "appendicitis", "cholecystitis", "pancreatitis", "cirrhosis",
    "hepatitis", "hypothyroidism", "hyperthyroidism", "anemia", "anaemia", "hypokalemia", "hyperkalemia",
    "hyponatremia", "hypernatremia", "hypoglycemia", "hyperglycemia", "diabetic ketoacidosis", "cancer",
    "lymphoma", "leukemia", "meningitis", "endocarditis", "osteomyelitis", "fracture", "dementia", "delirium",
    "depression", "epilepsy", "migraine", "gout", "angina", "aortic stenosis", "pneumothorax",
    "pleural effusion", "covid-19", "influenza", "tuberculosis", "gastrointestinal bleed", "obesity",
)  # fmt: skip
FINDINGS: tuple[str, ...] = (
    "chest pain", "shortness of breath", "dyspnea", "dyspnoea", "fever", "cough", "nausea", "vomiting",
    "diarrhea", "diarrhoea", "constipation", "headache", "syncope", "palpitations", "edema", "oedema", "rash",
    "abdominal pain", "weight loss", "hemoptysis", "confusion", "dizziness", "fatigue", "chills", "wheeze",
    "wheezing", "tachycardia", "bradycardia", "hypotension", "hypoxia", "jaundice", "bleeding", "melena",
    "hematuria", "dysuria", "seizure", "weakness", "numbness", "back pain", "sweating", "diaphoresis",
    "orthopnea", "murmur", "crackles", "swelling", "tenderness", "allergy", "allergies",
)  # fmt: skip
ORGANISMS: dict[str, str] = {  # as written -> normalised name
    "e. coli": "escherichia coli", "escherichia coli": "escherichia coli",
    "s. aureus": "staphylococcus aureus", "staphylococcus aureus": "staphylococcus aureus",
    "mrsa": "mrsa", "mssa": "mssa",
    "s. pneumoniae": "streptococcus pneumoniae", "streptococcus pneumoniae": "streptococcus pneumoniae",
    "k. pneumoniae": "klebsiella pneumoniae", "klebsiella pneumoniae": "klebsiella pneumoniae",
    "klebsiella": "klebsiella", "p. aeruginosa": "pseudomonas aeruginosa",
    "pseudomonas aeruginosa": "pseudomonas aeruginosa", "pseudomonas": "pseudomonas",
    "enterococcus": "enterococcus", "vre": "vre", "c. difficile": "clostridioides difficile",
    "clostridioides difficile": "clostridioides difficile", "clostridium difficile": "clostridioides difficile",
    "candida": "candida", "sars-cov-2": "sars-cov-2", "mycobacterium tuberculosis": "mycobacterium tuberculosis",
    "group a streptococcus": "group a streptococcus", "haemophilus influenzae": "haemophilus influenzae",
}  # fmt: skip
LABS: dict[str, str] = {  # as written -> normalised test name
    "k": "k", "potassium": "k", "na": "na", "sodium": "na", "cr": "creatinine", "creatinine": "creatinine",
    "hb": "hb", "hgb": "hb", "hemoglobin": "hb", "haemoglobin": "hb", "wbc": "wbc", "white count": "wbc",
    "plt": "platelets", "platelets": "platelets", "inr": "inr", "glucose": "glucose", "bg": "glucose",
    "hba1c": "hba1c", "a1c": "hba1c", "troponin": "troponin", "bp": "bp", "blood pressure": "bp",
    "hr": "hr", "heart rate": "hr", "pulse": "hr", "rr": "rr", "respiratory rate": "rr", "spo2": "spo2",
    "sats": "spo2", "saturation": "spo2", "o2 sat": "spo2", "temp": "temperature", "temperature": "temperature",
    "egfr": "egfr", "crp": "crp", "lactate": "lactate", "bnp": "bnp", "ef": "ef", "ejection fraction": "ef",
    "tsh": "tsh", "alt": "alt", "ast": "ast", "bilirubin": "bilirubin", "albumin": "albumin", "ph": "ph",
    "magnesium": "magnesium", "mg": "magnesium", "calcium": "calcium", "ca": "calcium", "bmi": "bmi",
}  # fmt: skip


def _alternation(words: Iterable[str]) -> str:
    """A regex alternation of ``words``, longest first so that the longest phrase wins."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CONCEPTS = re.compile(
    rf"\b(?:(?P<diagnosis>{_alternation(DIAGNOSES)})|(?P<finding>{_alternation(FINDINGS)})"
    rf"|(?P<organism>{_alternation(ORGANISMS)}))(?![\w-])"
)
_WORD = re.compile(r"[a-z][a-z-]{3,}")
_LAB = re.compile(
    rf"\b(?P<name>{_alternation(k for k in LABS if k != 'mg')})\b(?:\s*(?:level|of|was|is|at|were|:|=|-)){{0,2}}"
    r"\s*(?P<value>\d+(?:\.\d+)?(?:/\d+)?)(?!\d|\.\d)(?!\s*(?:meq|mg|mcg|units?|mmol(?!/))\b)(?P<pct>\s*%)?"
)
_DOSE_UNITS = r"mcg/kg/min|mg/kg/day|mg/kg|units/kg|mg/day|mcg|µg|mg|meq|mmol|units?|iu|ml|g|l"
_DOSE = re.compile(rf"(?<![\w.])(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>{_DOSE_UNITS})(?![\w/])")
_MEASURE = re.compile(
    r"(?<![\w.])(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>mmhg|bpm|cm|mm|kg|°c|days?|weeks?|months?|hours?|minutes?)\b"
)
_PERCENT = re.compile(r"(?<![\w.])(?P<value>\d+(?:\.\d+)?)\s*%")
_AGE = re.compile(r"\b(?P<value>\d{1,3})[\s-]*year-old\b|\baged\s+(?P<aged>\d{1,3})\b")
_FREQUENCY = re.compile(r"\b(?P<value>bid|tid|qid|daily|q\d{1,2}h|prn|qhs|nightly|weekly|stat)\b")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = re.compile(
    rf"\b(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}|\d{{1,2}}\s+{_MONTH}\s+\d{{4}}"
    rf"|{_MONTH}\s+\d{{1,2}},?\s+\d{{4}})\b"
)
_LATERALITY = re.compile(r"\b(?P<side>left|right|bilateral)(?:-sided|\s+sided)?\b")
_LR = re.compile(r"(?<![\w/])(?P<side>[LR])(?=\s+[a-z]{3,})")  # case-sensitive: "R knee", not "r"
_SIDE = {"left": "left", "right": "right", "bilateral": "bilateral", "L": "left", "R": "right"}
_NEXT_WORD = re.compile(r"[\s-]*(?P<word>[a-z]+)")
_SIDE_SKIP = frozenset({"lower", "upper", "middle", "side", "sided", "and", "or", "main", "proximal", "distal"})
_NOT_SIDE = frozenset({"the", "a", "an", "his", "her", "home", "hospital", "ama", "against", "untreated", "to"})
_NEGATION = re.compile(
    r"\b(?:no|not|denies|denied|deny|denying|without|negative\s+for|ruled\s+out|free\s+of|absence\s+of|never|nor)\b"
)
_NEGATION_AFTER = re.compile(r"\s*(?:(?:was|were|is|are|has\s+been|have\s+been)\s+)?(?:ruled\s+out|excluded|absent)\b")
_CLAUSE_BREAK = re.compile(r"\b(?:but|however|although|though|except|which|who)\b|[;:]")
_SENTENCE_END = re.compile(r"(?<!\b\w)[.!?](?=\s)|\n+")  # not after an initial: "E. coli" is one sentence
NEGATION_WORDS = 6  # NegEx window: the trigger must be this many words or fewer before the concept
NEGATION_AFTER_CHARS = 30


def normalise(text: str) -> str:
    """The text with clinical abbreviations expanded ("pt" -> "patient", "b.i.d." -> "bid"), case kept."""
    text = _EVERY_HOURS.sub(lambda m: f"q{m.group(1)}h", text)
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    return text


def extract(text: str) -> list[Fact]:
    """The facts of ``text``, in the order of the extractors (see the module docstring); duplicates kept."""
    cased = normalise(text)
    low = cased.lower()
    if len(low) != len(cased):  # a few Unicode letters change length when lower-cased; offsets must agree
        cased = low
    ends = [m.end() for m in _SENTENCE_END.finditer(cased)]
    extractor = _Extractor(low, ends)
    return extractor.run(cased)


class _Extractor:
    """Runs the extractors over one normalised, lower-cased text, sharing the sentence and drug positions."""

    def __init__(self, low: str, sentence_ends: list[int]) -> None:
        self.low = low
        self.ends = sentence_ends
        self.taken: list[tuple[int, int]] = []  # number spans already read as lab values
        self.drugs = [(m.start(), m.group()) for m in _WORD.finditer(low) if _is_drug(m.group(), low, m.end())]

    def run(self, cased: str) -> list[Fact]:
        facts = [*self._labs(), *self._numbers(), *self._frequencies(), *self._concepts()]
        facts += [*self._laterality(cased), *self._simple()]
        return facts

    def sentence(self, position: int) -> int:
        return bisect.bisect_right(self.ends, position)

    def fact(self, kind: str, key: str, value: str, start: int, end: int, negatable: bool = False) -> Fact:
        negated = negatable and _negated(self.low, start, end, self._sentence_start(start))
        return Fact(kind, key, value, negated, self.sentence(start))

    def _sentence_start(self, position: int) -> int:
        index = self.sentence(position)
        return self.ends[index - 1] if index else 0

    def _drug_for(self, position: int) -> str | None:
        """The drug nearest before ``position`` in its sentence, else the nearest after it, else None."""
        sentence = self.sentence(position)
        same = [(start, name) for start, name in self.drugs if self.sentence(start) == sentence]
        before = [name for start, name in same if start < position]
        if before:
            return before[-1]
        after = [name for start, name in same if start > position]
        return after[0] if after else None

    def _labs(self) -> Iterator[Fact]:
        for m in _LAB.finditer(self.low):
            self.taken.append(m.span())
            value = _number(m.group("value")) + ("%" if m.group("pct") else "")
            yield self.fact("lab", LABS[m.group("name")], value, m.start(), m.end())

    def _free(self, start: int) -> bool:
        return not any(a <= start < b for a, b in self.taken)

    def _numbers(self) -> Iterator[Fact]:
        for m in _DOSE.finditer(self.low):
            if self._free(m.start()):
                unit = _unit(m.group("unit"))
                key = self._drug_for(m.start()) or unit
                yield self.fact("dose", key, f"{_number(m.group('value'))} {unit}", m.start(), m.end())
        for m in _MEASURE.finditer(self.low):
            if self._free(m.start()):
                unit = _unit(m.group("unit"))
                yield self.fact("measure", unit, f"{_number(m.group('value'))} {unit}", m.start(), m.end())
        for m in _PERCENT.finditer(self.low):
            if self._free(m.start()):
                yield self.fact("percent", "percent", _number(m.group("value")) + "%", m.start(), m.end())

    def _frequencies(self) -> Iterator[Fact]:
        for m in _FREQUENCY.finditer(self.low):
            key = self._drug_for(m.start()) or "frequency"
            yield self.fact("frequency", key, m.group("value"), m.start(), m.end())

    def _concepts(self) -> Iterator[Fact]:
        for start, name in self.drugs:
            yield self.fact("drug", name, PRESENT, start, start + len(name), negatable=True)
        for m in _CONCEPTS.finditer(self.low):
            kind = m.lastgroup or "finding"
            key = ORGANISMS[m.group()] if kind == "organism" else m.group()
            yield self.fact(kind, key, PRESENT, m.start(), m.end(), negatable=True)

    def _laterality(self, cased: str) -> Iterator[Fact]:
        found = [(m, _SIDE[m.group("side")]) for m in _LATERALITY.finditer(self.low)]
        found += [(m, _SIDE[m.group("side")]) for m in _LR.finditer(cased)]
        for m, side in found:
            target = _qualified(self.low, m.end())
            if target is not None:
                yield self.fact("laterality", target, side, m.start(), m.end())

    def _simple(self) -> Iterator[Fact]:
        for m in _AGE.finditer(self.low):
            yield self.fact("age", "age", m.group("value") or m.group("aged"), m.start(), m.end())
        for m in _DATE.finditer(self.low):
            yield self.fact("date", "date", " ".join(m.group().split()), m.start(), m.end())


def _is_drug(word: str, low: str, end: int) -> bool:
    """A known generic name or one with a generic-name suffix; a mineral only when a dose follows it."""
    if word in _LAB_DRUGS:
        return _DOSE.match(low, end + 1) is not None
    return word in _DRUGS or _DRUG_SUFFIX.fullmatch(word) is not None


def _qualified(low: str, position: int) -> str | None:
    """The word a laterality term qualifies ("left lower lobe" -> "lobe"); None when "left" is a verb."""
    for _ in range(3):
        m = _NEXT_WORD.match(low, position)
        if m is None:
            return None
        word = m.group("word")
        if word in _NOT_SIDE:
            return None
        if word not in _SIDE_SKIP:
            return word
        position = m.end()
    return None


def _negated(low: str, start: int, end: int, sentence_start: int) -> bool:
    """NegEx-style: a trigger at most NEGATION_WORDS words before the concept in the same clause, or a
    post-trigger ("was ruled out") right after it."""
    window = low[sentence_start:start]
    breaks = list(_CLAUSE_BREAK.finditer(window))
    if breaks:
        window = window[breaks[-1].end() :]
    window = " ".join(window.split()[-NEGATION_WORDS:])
    if _NEGATION.search(window):
        return True
    return _NEGATION_AFTER.match(low[end : end + NEGATION_AFTER_CHARS]) is not None


def _number(value: str) -> str:
    """The number without cosmetic zeros ("40.0" -> "40", "3.10" -> "3.1"); ratios ("150/90") as written."""
    if "/" in value or "." not in value:
        return value
    return value.rstrip("0").rstrip(".")


def _unit(unit: str) -> str:
    """Singular, canonical unit: "units" -> "unit", "µg" -> "mcg", "days" -> "day"."""
    if unit == "µg":
        return "mcg"
    return unit[:-1] if unit.endswith("s") and unit not in {"iu"} else unit
