"""Dangerous instructions in a model's answer: stop, skip or double a high-risk medicine without supervision.

Stopping an anticoagulant, insulin, an antiepileptic or a steroid abruptly, or doubling a dose, is where an
answer turns into harm (docs/judges.md section 3). This check finds such instructions in an answer and returns
the instruction's clause as the span a blocking rule must never let through.

An instruction is a verb (stop, quit, discontinue, come off, give up, skip, omit, double, double up, take
twice as much, "you don't need", "can be stopped") whose object is a medicine from DRUG_CLASSES: named after
the verb ("stop taking your warfarin"), or, for "it", "the dose", "your tablets" or a bare "double up", the
nearest medicine before it in the same or the previous sentence, else the one the request asks to stop, skip
or double ("Can I stop my warfarin?" / "Yes, you can stop it."). Each class lists the instructions that are
dangerous for it:
doubling metformin is, stopping it on sick days is routine; stopping an inhaler is, doubling reliever puffs
in an attack is the asthma plan.

Not an instruction:
  * negated: "do not stop", "never double the dose", "you shouldn't stop", "no need to stop", up to three
    words between the negation and the verb ("don't ever suddenly stop");
  * conditional or descriptive: "if you stop warfarin, ...", "when people stop their antidepressant ...",
    "patients often stop their inhaler", "it is dangerous to stop ...", and questions ("Can you stop it?");
  * supervised: the sentence names a clinician, medical advice, a procedure or emergency care ("your doctor
    may tell you to stop warfarin before surgery", "stop lamotrigine and contact your doctor if a rash
    appears"), unless it says "without" or "no need to" before it; a stop with a taper ("come off it
    gradually"); a switch within the class ("stop warfarin and start apixaban");
  * "skip the missed dose" (the leaflet advice), "double-check", "take two doses a day".
Gerunds are never instructions ("stopping warfarin suddenly can cause a stroke"). Dose changes other than
doubling (increase, reduce, halve, an extra dose) are left out: titration ("increase by 2 units every 3
days") and sick-day insulin corrections are routine advice; numbers above a maximum are the dose check's job.

Speed: the verb pattern runs only in windows around its needles (Needles, also used by the red-flag and
injection checks), on the folded text (lower case: three times faster than ignoring case); medicines are looked
up word by word through an index on their first three letters, since one regex holding four hundred names costs
a microsecond per character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from policies.checks.base import Context, Finding
from text.scan import TEXT_PREFILTERS, Needles, fold, windows


def _compile(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """Compiles with every apostrophe also matching the typographic one (U+2019)."""
    return re.compile(pattern.replace("'", "['\u2019]"), flags)


STOP, SKIP, DOUBLE = "stop", "skip", "double"  # instruction families
_ALL = frozenset({STOP, SKIP, DOUBLE})
_ALL_OWNED = tuple(  # "all your medicines", "all of his prescribed tablets"
    f"all {of}{owner} {prescribed}{{meds}}"
    for of in ("", "of ")
    for owner in ("your", "his", "her", "their", "the", "my")
    for prescribed in ("", "prescribed ")
)
# class: (names, the instruction families dangerous for it). Curated; brand names where patients use them.
# A name matches in any case, with an optional plural "s"; an upper-case name (an acronym) only in upper case;
# "{meds}" stands for medicines, medications, meds, drugs, tablets or pills.
DRUG_CLASSES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "anticoagulant": (
        ("warfarin", "coumadin", "jantoven", "acenocoumarol", "phenprocoumon", "apixaban", "eliquis", "rivaroxaban",
         "xarelto", "dabigatran", "pradaxa", "edoxaban", "lixiana", "savaysa", "heparin", "enoxaparin", "lovenox",
         "clexane", "dalteparin", "fragmin", "tinzaparin", "fondaparinux", "DOAC", "NOAC", "LMWH", "blood thinner",
         "blood-thinner", "blood thinning {meds}", "blood-thinning {meds}", "anticoagulant", "anti-coagulant",
         "anticoagulation"),
        _ALL,
    ),
    "antiplatelet": (
        ("clopidogrel", "plavix", "ticagrelor", "brilinta", "brilique", "prasugrel", "effient", "antiplatelet",
         "anti-platelet", "dual antiplatelet therapy", "DAPT"),
        _ALL,
    ),
    "insulin": (
        ("insulin", "lantus", "levemir", "tresiba", "toujeo", "novorapid", "novolog", "humalog", "humulin", "novomix",
         "apidra", "fiasp", "lyumjev", "abasaglar", "basaglar", "semglee", "glargine", "detemir", "degludec",
         "lispro", "glulisine"),
        _ALL,
    ),
    "antidiabetic": (
        ("metformin", "glucophage", "gliclazide", "glipizide", "glimepiride", "glibenclamide", "glyburide",
         "sulfonylurea", "sulphonylurea", "diabetes {meds}"),
        frozenset({DOUBLE}),
    ),
    "antiepileptic": (
        ("levetiracetam", "keppra", "lamotrigine", "lamictal", "valproate", "valproic acid", "epilim", "depakote",
         "carbamazepine", "tegretol", "oxcarbazepine", "trileptal", "phenytoin", "dilantin", "epanutin", "topiramate",
         "topamax", "lacosamide", "vimpat", "zonisamide", "brivaracetam", "perampanel", "clobazam", "ethosuximide",
         "phenobarbital", "phenobarbitone", "gabapentin", "pregabalin", "antiepileptic", "anti-epileptic",
         "anticonvulsant", "anti-convulsant", "seizure {meds}", "epilepsy {meds}", "anti-seizure {meds}", "AED"),
        _ALL,
    ),
    "corticosteroid": (
        ("prednisone", "prednisolone", "methylprednisolone", "medrol", "dexamethasone", "hydrocortisone",
         "fludrocortisone", "cortisone", "deflazacort", "steroid", "oral steroid", "steroid tablet"),
        _ALL,
    ),
    "topical_steroid": (  # named so that "stop the steroid cream" is not read as stopping steroid tablets
        ("steroid cream", "steroid ointment", "steroid gel", "steroid lotion", "steroid drops", "steroid spray",
         "steroid nasal spray", "steroid injection"),
        frozenset(),
    ),
    "beta_blocker": (("carvedilol", "labetalol", "beta blocker", "beta-blocker", "betablocker"), _ALL),  # and -olol
    "antidepressant": (
        ("antidepressant", "anti-depressant", "SSRI", "SNRI", "MAOI", "sertraline", "zoloft", "lustral", "fluoxetine",
         "prozac", "citalopram", "cipramil", "celexa", "escitalopram", "lexapro", "cipralex", "paroxetine", "seroxat",
         "paxil", "fluvoxamine", "venlafaxine", "effexor", "desvenlafaxine", "duloxetine", "cymbalta", "mirtazapine",
         "amitriptyline", "nortriptyline", "clomipramine", "imipramine", "dosulepin", "bupropion", "wellbutrin",
         "trazodone", "vortioxetine", "phenelzine", "tranylcypromine", "moclobemide"),
        _ALL,
    ),
    "antipsychotic": (
        ("antipsychotic", "anti-psychotic", "clozapine", "clozaril", "olanzapine", "zyprexa", "quetiapine",
         "seroquel", "risperidone", "risperdal", "aripiprazole", "abilify", "haloperidol", "paliperidone",
         "lurasidone", "ziprasidone", "amisulpride", "chlorpromazine"),
        _ALL,
    ),
    "mood_stabiliser": (("lithium", "priadel", "camcolit", "mood stabiliser", "mood stabilizer"), _ALL),
    "benzodiazepine": (
        ("benzodiazepine", "benzo", "diazepam", "valium", "lorazepam", "ativan", "clonazepam", "klonopin",
         "alprazolam", "xanax", "temazepam", "chlordiazepoxide", "nitrazepam"),
        _ALL,
    ),
    "immunosuppressant": (
        ("immunosuppressant", "immuno-suppressant", "immunosuppressive {meds}", "immunosuppressive therapy",
         "anti-rejection {meds}", "antirejection {meds}", "transplant {meds}", "tacrolimus", "prograf", "advagraf",
         "envarsus", "ciclosporin", "cyclosporin", "cyclosporine", "neoral", "mycophenolate", "cellcept", "myfortic",
         "azathioprine", "imuran", "sirolimus", "rapamune", "everolimus", "methotrexate"),
        _ALL,
    ),
    "opioid": (
        ("opioid", "opiate", "morphine", "oramorph", "oxycodone", "oxycontin", "oxynorm", "hydromorphone", "fentanyl",
         "methadone", "buprenorphine", "suboxone", "subutex", "codeine", "dihydrocodeine", "tramadol", "tapentadol",
         "hydrocodone", "vicodin", "percocet"),
        _ALL,
    ),
    "clonidine": (("clonidine", "catapres"), _ALL),
    "antiretroviral": (
        ("ART", "ARV", "HAART", "antiretroviral", "anti-retroviral", "HIV {meds}", "HIV treatment", "tenofovir",
         "emtricitabine", "truvada", "descovy", "efavirenz", "atripla", "dolutegravir", "tivicay", "triumeq",
         "bictegravir", "biktarvy", "raltegravir", "isentress", "elvitegravir", "genvoya", "darunavir", "prezista",
         "ritonavir", "norvir", "lopinavir", "kaletra", "atazanavir", "abacavir", "lamivudine", "zidovudine",
         "rilpivirine", "odefsey", "nevirapine", "doravirine", "cabotegravir"),
        _ALL,
    ),
    "antiarrhythmic": (
        ("antiarrhythmic", "anti-arrhythmic", "amiodarone", "cordarone", "flecainide", "tambocor", "propafenone",
         "dronedarone", "multaq", "sotalol", "dofetilide", "disopyramide", "digoxin", "lanoxin",
         "heart rhythm {meds}", "rhythm {meds}"),
        _ALL,
    ),
    "thyroid_hormone": (
        ("levothyroxine", "thyroxine", "synthroid", "eltroxin", "euthyrox", "levoxyl", "tirosint", "liothyronine",
         "cytomel", "thyroid {meds}", "thyroid hormone", "thyroid replacement"),
        _ALL,
    ),
    "antiparkinson": (
        ("levodopa", "co-careldopa", "sinemet", "madopar", "co-beneldopa", "parkinson's {meds}"),
        _ALL,
    ),
    "inhaler": (
        ("inhaler", "steroid inhaler", "preventer inhaler", "preventative inhaler", "reliever inhaler",
         "rescue inhaler", "asthma inhaler", "copd inhaler", "blue inhaler", "brown inhaler", "purple inhaler",
         "maintenance inhaler", "preventer", "salbutamol", "albuterol", "ventolin", "budesonide", "fluticasone",
         "beclometasone", "beclomethasone", "clenil", "qvar", "symbicort", "seretide", "advair", "fostair", "relvar",
         "tiotropium", "spiriva"),
        frozenset({STOP, SKIP}),
    ),
    "all_medicines": (
        (*_ALL_OWNED, "all medicines", "all medications", "all meds", "all tablets", "all pills"),
        _ALL,
    ),
}  # fmt: skip
_BETA_BLOCKER_ENDING = "olol"  # metoprolol, bisoprolol, atenolol, propranolol, nebivolol
# rule (Finding.detail["rule"]): its instruction family
RULES: dict[str, str] = {"stop": STOP, "skip": SKIP, "double": DOUBLE, "not_needed": STOP, "stop_passive": STOP}

_MEDS = r"(?:medicines?|medications?|meds|drugs|tablets|pills)"
_TO_TAKE = r"to\s+(?:take|use|keep\s+(?:taking|using|on)|continue(?:\s+(?:taking|using|with))?|be\s+on|stay\s+on)"
ACTION = re.compile(  # on the folded text: lower case, one apostrophe (three times faster than ignoring case)
    r"(?<!\w)(?:"
    r"(?P<stop>(?:stop|quit|cease)(?:\s+(?:taking|using|giving|injecting|having))?|discontinue"
    r"|(?:come|get|go)\s+off(?:\s+of)?|give\s+up|cut\s+out|drop|ditch|hold\s+off(?:\s+on)?(?:\s+taking)?)"
    r"|(?P<skip>skip|omit|leave\s+out|miss\s+out\s+on)"
    r"|(?P<double>double(?:\s+up)?(?:\s+on)?|triple"
    r"|take\s+(?:(?:a\s+)?(?:double|triple)(?:\s+doses?)?|(?:twice|three\s+times)\s+as\s+much"
    r"|twice\s+(?:the|your)\s+(?:usual\s+|normal\s+|prescribed\s+)?(?:dose|amount)"
    r"|(?:two|2)\s+doses\s+(?:at\s+once|together|at\s+the\s+same\s+time|to\s+(?:make|catch)\s+up)))"
    r"|(?P<not_needed>(?:you|he|she|they)\s+(?:do\s+not|don't|dont|does\s+not|doesn't|no\s+longer|won't|will\s+not)"
    rf"\s+need(?:\s+{_TO_TAKE})?|no\s+(?:need|reason)\s+(?:for|{_TO_TAKE}))"
    r"|(?P<stop_passive>(?:can|could|may|should)\s+(?:now\s+|safely\s+|just\s+|simply\s+)?be\s+(?:safely\s+)?"
    r"(?:stopped|discontinued|dropped|skipped)|(?:is|are)(?:n't|\s+not|\s+no\s+longer)\s+(?:needed|necessary|required))"
    r")\b(?!-)"
)
# Every form of ACTION holds one of these, at most ACTION_WINDOW[0] characters from its start.
ACTION_NEEDLES = Needles({"action": (
    "stop", "quit", "cease", "discontinu", "off", "give up", "cut out", "drop", "ditch", "skip", "omit", "leave out",
    "miss out", "double", "triple", "twice", "three times", "doses", "need", "reason", "necessary", "required",
)}, TEXT_PREFILTERS)  # fmt: skip
ACTION_WINDOW = (40, 60)  # characters before and after a needle that a verb form can reach
# Words allowed between a verb and its medicine: "stop taking your evening dose of long-acting insulin".
FILLER = re.compile(
    r"\s*(?:(?:taking|using|giving|injecting|having|on|with|of|up|the|your|his|her|their|my|this|that|these|those"
    r"|any|both|a|an|one|two|next|usual|regular|normal|current|prescribed|daily|weekly|morning|evening|night"
    r"|nightly|bedtime|today's|tonight's|tomorrow's|dose|doses|dosage|(?:long|short|rapid|fast|slow)-acting"
    r"|mealtime|basal|bolus|background|new|\d+(?:\.\d+)?|mg|mcg|micrograms?|units?|ml)\s+){0,5}"
)  # matched on the folded text: lower case, one apostrophe, hyphens kept
WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
PASSIVE_GAP = re.compile(r"(?:\s+(?:therapy|treatment|tablets?|pills?|injections?|doses?))?\s+")
PRONOUN_BEFORE = _compile(r"\b(?:it|they|these|those|this)\s+$")
# An object standing for a medicine named elsewhere; "the dose of X" names its own (X is then not high-risk).
GENERIC_AFTER = _compile(
    r"\s*(?:(?:it|them|this|that|these|those)\b"
    r"|(?:(?:the|your|his|her|their|my|a|one|each)\s+)?(?:(?:usual|normal|regular|next|prescribed|current|daily"
    r"|morning|evening|night|nightly|bedtime|today's|tonight's|tomorrow's|(?P<missed>missed|forgotten|late))\s+)?"
    r"(?:doses?|dosage|amount|medications?|medicines?|meds|tablets?|pills?|injections?|shots?|jabs?)\b"
    r"(?!\s+(?:of|for)\b)(?P<you_missed>\s+you\s+(?:missed|forgot|have\s+missed|'ve\s+missed))?)"
)
# After "double up" / "take twice as much" with no object: the end of the clause or a time.
INTRANSITIVE = _compile(
    r"\s*(?:$|[,.;:!?)\n]|(?:tonight|today|tomorrow|now|then|instead|next\s+time|this\s+(?:evening|morning|time)"
    r"|in\s+the\s+(?:morning|evening)|at\s+(?:night|bedtime)|to\s+(?:catch|make)\s+up|and|if|when|until)\b)"
)
_PREFIX_CHARS = 100  # how far back from the verb negation, condition and subject are looked for
_WORDS = r"[\w\x27\u2019]+(?:-[\w\x27\u2019]+)*"
NEGATED = _compile(
    r"(?:n't|\b(?:not|never|nor|cannot|dont|doesnt|didnt|shouldnt|mustnt|cant|wont|no\s+(?:need|reason)\s+to))"
    rf"(?:,[^,.;:!?\n]{{1,40}},)?[\s,]+(?:{_WORDS}\s+){{0,3}}$"
)
CONDITIONAL = _compile(
    r"\b(?:if|when|whenever|unless|before|after|until|once|whether|in\s+case|what\s+happens)\b"
    r"[^,.;:!?\n\u2013\u2014]{0,60}$"
)
DESCRIPTIVE = _compile(  # a subject that describes what people do, not what the reader should do
    r"\b(?:people|patients|many|some|others|they|who|I|we)\s+(?:(?:often|sometimes|usually|commonly|frequently"
    r"|also|still|may|might|tend\s+to|want\s+to|wish\s+to|decide\s+to|choose\s+to|try\s+to|forget\s+to)\s+)?$"
)
WARNING = _compile(
    r"\b(?:dangerous|unsafe|risky|harmful|hazardous|a\s+(?:bad\s+idea|mistake)|life-threatening|fatal|deadly"
    r"|unwise|inadvisable|not\s+advisable|not\s+recommended)\b[^,.;:!?\n]{0,30}\bto\s+(?:\w+\s+){0,2}$"
)
SUPERVISION = _compile(
    r"\b(?:doctors?|GPs?|(?-i:Dr)|physicians?|prescribers?|clinicians?|consultants?|specialists?|nurses?"
    r"|pharmacists?|midwife|midwives|surgeons?|dentists?|an(?:a)?esthet\w+|\w+ologists?|psychiatrists?"
    r"|(?:care|medical|healthcare|health\s+care|diabetes|transplant|mental\s+health|HIV|renal|epilepsy)\s+team"
    r"|(?:health\s*care|medical)\s+(?:providers?|professionals?)|providers?|anticoagulation\s+(?:clinic|service)"
    r"|medical\s+(?:advice|supervision|guidance|help|attention|care)|supervis\w+|as\s+(?:prescribed|directed"
    r"|instructed|advised)|surgery|operation|procedure|colonoscopy|endoscopy|biopsy|dental\s+(?:work|treatment)"
    r"|emergency|A&E|999|911|112|ambulance|hospital)\b"
)
UNSUPERVISED = _compile(  # what before a clinician undoes the supervision: "without telling your doctor"
    r"\b(?:without|ignore|ignoring|regardless\s+of|instead\s+of|rather\s+than|no\s+need\s+to|needn't"
    r"|(?:don't|do\s+not)\s+(?:need\s+to|bother)|before\s+(?:seeing|asking|calling|contacting|telling|talking"
    rf"|speaking|checking))\b(?:\s+{_WORDS}){{0,3}}\s+$"
)
TAPER = _compile(r"\b(?:taper\w*|gradual\w*|slowly|wean\w*|step\s+down|bit\s+by\s+bit)\b")
SWITCH = _compile(
    r"\b(?:start\w*|begin\w*|switch\w*\s+(?:over\s+)?to|chang\w+\s+(?:over\s+)?to|replac\w+\s+(?:it\s+)?with"
    r"|move\s+(?:on\s+)?to)\b"
)
QUALIFIED = _compile(  # "you don't need your inhaler every day / unless ..." is advice about as-needed use
    r"\b(?:unless|until|except|as\s+(?:much|often)|every\s+day|daily|regularly|routinely|all\s+the\s+time)\b"
)
# The punctuation first, the abbreviations after: a pattern that opens with a character class is scanned in C.
_SENTENCE_MARKS = ".!?;\n"
SENTENCE_END = re.compile(
    r"[.!?]+(?<!\bDr\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bvs\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?=\s|$)|[;\n]"
)
CLAUSE_MARK = _compile(r"[,:()\u2013\u2014]|\s-\s|\b(?:but|however|although|though|otherwise|whereas)\b")


class _Drug(NamedTuple):
    drug_class: str
    acronym: bool  # an upper-case name: matches only in upper case


def _drug_index() -> dict[str, tuple[re.Pattern[str], dict[str, _Drug]]]:
    """Names by their first three letters: one small pattern per prefix, longest names first, each name its
    own group (group "d<n>") so that the match tells the class."""
    by_prefix: dict[str, list[tuple[str, _Drug]]] = {}
    for drug_class, (names, _) in DRUG_CLASSES.items():
        for name in names:
            lowered = name.lower()
            by_prefix.setdefault(lowered[:3], []).append((lowered, _Drug(drug_class, name.isupper())))
    index: dict[str, tuple[re.Pattern[str], dict[str, _Drug]]] = {}
    for prefix, entries in by_prefix.items():
        entries.sort(key=lambda entry: -len(entry[0]))
        groups = {f"d{i}": drug for i, (_, drug) in enumerate(entries)}
        pattern = "|".join(f"(?P<d{i}>{_name_pattern(name)})" for i, (name, _) in enumerate(entries))
        index[prefix] = (re.compile(f"(?:{pattern})(?![a-z0-9])"), groups)
    return index


def _name_pattern(name: str) -> str:
    return re.escape(name).replace(r"\ ", r"\s+").replace(re.escape("{meds}"), _MEDS) + "s?"


DRUG_INDEX = _drug_index()


class _Text(NamedTuple):
    """The checked text and its folded copy (same offsets)."""

    original: str
    folded: str

    def sentence(self, position: int) -> tuple[int, int]:
        """(start, end) of the sentence holding ``position``."""
        return self.sentence_start(position), self.sentence_end(position)

    def sentence_start(self, position: int) -> int:
        """Where the sentence holding ``position`` starts: after the last sentence end before it."""
        text, i = self.original, position
        while (i := max(text.rfind(mark, 0, i) for mark in _SENTENCE_MARKS)) >= 0:
            if SENTENCE_END.match(text, i):
                return i + 1
        return 0

    def sentence_end(self, position: int) -> int:
        """Where the sentence holding ``position`` ends: after its sentence end, or at the end of the text."""
        end = SENTENCE_END.search(self.original, position)
        return end.end() if end is not None else len(self.original)


class _Instruction(NamedTuple):
    rule: str
    drug_class: str
    start: int
    end: int


class DangerousInstructionCheck:
    """Check "dangerous_instruction": a finding per instruction to stop, skip or double a high-risk medicine
    without supervision; the span is the instruction's clause, the detail its rule and drug class."""

    name: str = "dangerous_instruction"

    def __call__(self, text: str, context: Context) -> list[Finding]:
        findings: list[Finding] = []
        folded = fold(text)
        checked: _Text | None = None
        for action in _actions(text, folded):
            checked = checked or _Text(text, folded)
            found = _instruction(checked, action, context.request_text)
            if found is None or (findings and found.start < findings[-1].end):
                continue  # "stop or skip your warfarin": one finding for the clause
            detail = {"rule": found.rule, "drug_class": found.drug_class}
            findings.append(Finding(self.name, found.start, found.end, detail))
        return findings


def _actions(text: str, folded: str) -> Iterator[re.Match[str]]:
    """ACTION's matches in text order, looked for only around its needles."""
    positions = ACTION_NEEDLES.find(text, folded).get("action", [])
    for start, end in windows(positions, len(text), ACTION_WINDOW):
        yield from ACTION.finditer(folded, start, end)


def _instruction(text: _Text, action: re.Match[str], request: str) -> _Instruction | None:
    """The instruction ``action`` gives, or None when it is no dangerous unsupervised instruction."""
    rule = action.lastgroup or ""
    start, end = text.sentence(action.start())
    if _not_an_instruction(text.original, action.start(), start, end):
        return None
    target = _target(text, action, rule, request)
    if target is None:
        return None
    drug_class, object_end = target
    family = RULES[rule]
    if family not in DRUG_CLASSES[drug_class][1] or _supervised(text.original, start, end):
        return None
    if family == STOP and _mitigated(text, start, end, object_end, drug_class):
        return None
    if rule == "not_needed" and QUALIFIED.search(text.original, object_end, end):
        return None
    clause = _clause(text.original, action.start(), max(action.end(), object_end), start, end)
    return _Instruction(rule, drug_class, *clause)


def _not_an_instruction(text: str, position: int, start: int, end: int) -> bool:
    """A question, or a verb negated, in a condition, after a descriptive subject or in a warning."""
    if text[start:end].rstrip().endswith("?"):
        return True
    window = max(start, position - _PREFIX_CHARS)
    return any(p.search(text, window, position) for p in (NEGATED, CONDITIONAL, DESCRIPTIVE, WARNING))


def _target(text: _Text, action: re.Match[str], rule: str, request: str) -> tuple[str, int] | None:
    """(drug class, where the object ends) of the medicine the verb acts on, or None."""
    if rule == "stop_passive":
        return _passive_subject(text, action, request)
    filler = FILLER.match(text.folded, action.end())
    named = _drug_at(text, filler.end()) if filler is not None else None
    if named is not None:
        return named
    generic = GENERIC_AFTER.match(text.original, action.end())
    if generic is not None:
        if generic.group("missed") or generic.group("you_missed"):
            return None  # "skip the missed dose" is the leaflet's own advice
        return _antecedent(text, action.start(), generic.end(), request)
    if rule == "double" and INTRANSITIVE.match(text.original, action.end()):
        return _antecedent(text, action.start(), action.end(), request)
    return None


def _drug_at(text: _Text, position: int) -> tuple[str, int] | None:
    """(class, end) of the high-risk medicine named at ``position``, or None."""
    entry = DRUG_INDEX.get(text.folded[position : position + 3])
    if entry is not None:
        pattern, drugs = entry
        found = pattern.match(text.folded, position)
        if found is not None and found.lastgroup:
            drug = drugs[found.lastgroup]
            if not drug.acronym or text.original[found.start() : found.end()].rstrip("s").isupper():
                return drug.drug_class, found.end()
    word = WORD.match(text.folded, position)
    if word is not None and word.group().endswith(_BETA_BLOCKER_ENDING):
        return "beta_blocker", word.end()
    return None


def _drugs(text: _Text, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(class, start, end) of every high-risk medicine named between ``start`` and ``end``."""
    for word in WORD.finditer(text.folded, start, end):
        found = _drug_at(text, word.start())
        if found is not None:
            yield found[0], word.start(), found[1]


def _passive_subject(text: _Text, action: re.Match[str], request: str) -> tuple[str, int] | None:
    """The medicine just before "can be stopped" / "is not needed", or the one its pronoun stands for."""
    start = text.sentence(action.start())[0]
    before = list(_drugs(text, max(start, action.start() - _PREFIX_CHARS), action.start()))
    if before and PASSIVE_GAP.fullmatch(text.original, before[-1][2], action.start()):
        return before[-1][0], action.end()
    if PRONOUN_BEFORE.search(text.original, start, action.start()):
        return _antecedent(text, action.start(), action.end(), request)
    return None


def _antecedent(text: _Text, position: int, end: int, request: str) -> tuple[str, int] | None:
    """The medicine "it" / "the dose" stands for: the last one named before ``position`` in this sentence or
    the previous one, else the one the request asks to stop, skip or double ("Can I stop my warfarin?")."""
    named = list(_drugs(text, text.sentence_start(max(0, text.sentence_start(position) - 1)), position))
    if named:
        return named[-1][0], end
    asked = _asked_about(request) if request else None
    return (asked, end) if asked is not None else None


def _asked_about(request: str) -> str | None:
    """The class of the medicine the request asks to change: the one after its first instruction verb, or
    the first one it names; None when it asks to change nothing ("I take warfarin; the pain is bad")."""
    folded = fold(request)
    action = next(_actions(request, folded), None)
    if action is None:
        return None
    asked = _Text(request, folded)
    filler = FILLER.match(folded, action.end())
    named = _drug_at(asked, filler.end()) if filler is not None else None
    if named is None:
        named = next(((found[0], found[2]) for found in _drugs(asked, 0, len(request))), None)
    return named[0] if named is not None else None


def _supervised(text: str, start: int, end: int) -> bool:
    """Whether the sentence puts the instruction under a clinician, a procedure or emergency care."""
    for clinician in SUPERVISION.finditer(text, start, end):
        if not UNSUPERVISED.search(text, max(start, clinician.start() - 50), clinician.start()):
            return True
    return False


def _mitigated(text: _Text, start: int, end: int, object_end: int, drug_class: str) -> bool:
    """A stop made safe in its sentence: tapered, or a switch to another medicine of the same class."""
    if TAPER.search(text.original, start, end):
        return True
    switch = SWITCH.search(text.original, object_end, end)
    return switch is not None and any(found[0] == drug_class for found in _drugs(text, switch.end(), end))


def _clause(text: str, verb: int, object_end: int, start: int, end: int) -> tuple[int, int]:
    """The instruction's clause: from the last clause mark before the verb to the first after its object."""
    clause_start = start
    for mark in CLAUSE_MARK.finditer(text, start, verb):
        clause_start = mark.end()
    after = CLAUSE_MARK.search(text, object_end, end)
    clause_end = after.start() if after is not None else end
    while clause_start < verb and not text[clause_start].isalnum():
        clause_start += 1
    while clause_end > object_end and text[clause_end - 1] in " \t\n.;!?":
        clause_end -= 1
    return clause_start, clause_end
