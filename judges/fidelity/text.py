"""Clinical text as cef-lite reads it: sentences of normalised terms, each term carrying its negation.

``statements(text)`` splits a text into sentences and each sentence into the set of its content terms:
clinical abbreviations are expanded first ("pt w/o CP" and "patient without chest pain" give the same
terms), words are lower-cased and stemmed (Snowball), numbers keep their value ("40.0" -> "40"), and
function words are dropped. A term inside the scope of a negation ("denies fever", "no evidence of
pneumonia", "pneumonia was ruled out") is prefixed with "no:", so a flipped negation is a different term.
The surface word of each term is kept for evidence. Rules only: synonyms outside the abbreviation table,
entailment and reasoning are out of reach.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import snowballstemmer

# Abbreviations clinicians write, expanded to one canonical form; units go the other way ("milligrams" -> "mg").
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"\bpts\b", "patients"),
    (r"\bpt\b", "patient"),
    (r"\bh/o\b", "history of"),
    (r"\bc/o\b", "complains of"),
    (r"\bs/p\b", "status post"),
    (r"\br/o\b", "rule out"),
    (r"\bb/l\b", "bilateral"),
    (r"\bw/o\b", "without"),
    (r"\bw/", "with "),
    (r"\b(?:y/o|y\.o\.|yo|yrs?\s+old|years?\s+old)(?=\W|$)", "year-old"),
    (r"\bED\b", "emergency department"),
    (r"\bER\b", "emergency room"),
    (r"\bhx\b", "history"),
    (r"\bdx\b", "diagnosis"),
    (r"\bddx\b", "differential diagnosis"),
    (r"\btx\b", "treatment"),
    (r"\brx\b", "prescription"),
    (r"\bsx\b", "symptoms"),
    (r"\bfx\b", "fracture"),
    (r"\babx\b", "antibiotics"),
    (r"\bf/u\b", "follow-up"),
    (r"\bBP\b", "blood pressure"),
    (r"\bHR\b", "heart rate"),
    (r"\bRR\b", "respiratory rate"),
    (r"\btemp\b", "temperature"),
    (r"\bexams?\b", "examination"),
    (r"\blabs?\b", "laboratory"),
    (r"\bIV\b", "intravenous"),
    (r"\bIM\b", "intramuscular"),
    (r"\bPO\b", "oral"),
    (r"\bSOB\b", "shortness of breath"),
    (r"\bCP\b", "chest pain"),
    (r"\bHTN\b", "hypertension"),
    (r"\bT2DM\b|\bDM\b|\bdiabetes\s+mellitus\b", "diabetes"),
    (r"\bMI\b|\bheart\s+attack\b", "myocardial infarction"),
    (r"\bCHF\b", "congestive heart failure"),
    (r"\bA-?fib\b|\bAF\b", "atrial fibrillation"),
    (r"\bPE\b", "pulmonary embolism"),
    (r"\bDVT\b", "deep vein thrombosis"),
    (r"\bCKD\b", "chronic kidney disease"),
    (r"\bAKI\b", "acute kidney injury"),
    (r"\bUTI\b", "urinary tract infection"),
    (r"\bCVA\b", "stroke"),
    (r"\bN/V\b", "nausea and vomiting"),
    (r"\bEKG\b", "ECG"),
    (r"\bb\.i\.d\.?|\bBID\b|\btwice\s+(?:daily|a\s+day)\b", "bid"),
    (r"\bt\.i\.d\.?|\bTID\b|\b(?:three\s+times|thrice)\s+(?:daily|a\s+day)\b", "tid"),
    (r"\bq\.i\.d\.?|\bQID\b|\bfour\s+times\s+(?:daily|a\s+day)\b", "qid"),
    (r"\bq\.?d\.?(?=\s|$)|\bonce\s+(?:daily|a\s+day)\b|\bevery\s+day\b|\bOD\b", "daily"),
    (r"\bp\.r\.n\.?|\bPRN\b|\bas\s+needed\b", "prn"),
    (r"\bq\.h\.s\.?|\bat\s+(?:night|bedtime)\b", "qhs"),
    (r"\bmilligrams?\b", "mg"),
    (r"\bmicrograms?\b", "mcg"),
    (r"\bkilograms?\b", "kg"),
    (r"\bmillilit(?:er|re)s?\b", "ml"),
    (r"\bE\.\s*coli\b", "escherichia coli"),
    (r"\bS\.\s*aureus\b", "staphylococcus aureus"),
)
_ABBREVIATIONS = tuple((re.compile(p, re.IGNORECASE), r) for p, r in ABBREVIATIONS)
CASED: tuple[tuple[re.Pattern[str], str], ...] = (  # single capitals: "L knee", "R arm", "K 3.1"
    (re.compile(r"(?<![\w/])L(?=\s+[a-z]{3,})"), "left"),
    (re.compile(r"(?<![\w/])R(?=\s+[a-z]{3,})"), "right"),
    (re.compile(r"(?<![\w/])K(?=\s*[:=]?\s*\d)"), "potassium"),
)
# A pseudonymised sample's placeholders ("[NAME_1]", "[MRN_2]", pipeline/privacy.py) are one name each: one term
# ("name1"), not a word and a number.
_PLACEHOLDER = re.compile(r"\[([A-Z]+)_(\d+)\]")
_EVERY_HOURS = re.compile(r"\bevery\s+(\d{1,2})\s*(?:hours|hrs?|h)\b", re.IGNORECASE)
NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "twelve": "12", "twenty": "20",
}  # fmt: skip

_STOPWORDS = """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just may me might more most must my
    myself now of off on once only or other our ours out over own per same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up upon very was we
    were what when where which while who whom why will with would you your yours s t
    patient patients mr mrs ms man woman boy girl he she his her him year-old old
    noted note notes show shows showed shown reveal reveals revealed demonstrate demonstrates demonstrated
    found find finding findings present presents presented presenting report reports reported
    please see anything something else thing things"""
STOPWORDS = frozenset(_STOPWORDS.split())
# Negation: a trigger puts the next NEGATION_TERMS content terms of its clause in scope; a post-trigger puts
# the previous ones in scope. Clause breaks end a scope.
NEGATION = frozenset({"no", "not", "denies", "denied", "deny", "denying", "without", "never", "nor", "none", "neither"})
NEGATION_PHRASES = re.compile(r"\b(?:negative\s+for|free\s+of|absence\s+of|no\s+evidence\s+of|ruled\s+out)\b")
POST_NEGATION = re.compile(r"\b(?:was|were|is|are|been)\s+(?:ruled\s+out|excluded|absent|negative)\b")
POST = "negationpost0"  # stands for a post-trigger in the token stream (no clinical word looks like it)
CLAUSE_BREAKS = frozenset({"but", "however", "although", "though", "except", "which", "who", "whereas", ";", ":"})
NEGATION_TERMS = 4
# ", and" starting a new clause (a subject, or a verb within three words) ends a scope; a list does not:
# "no guarding, and CT showed appendicitis" vs "no fever, chills, and night sweats".
NEW_CLAUSE = re.compile(
    r",\s+(?:and|or|but|so|then|while)\s+(?=(?:the|a|an|he|she|it|they|his|her|their|there|this|these|patient)\b"
    r"|(?:[\w/-]+\s+){0,2}(?:is|was|are|were|has|had|have|shows?|showed|shown|reveal(?:s|ed)?|demonstrate[sd]?"
    r"|diagnosed|started|given|underwent|received)\b)"
)
_WORD = re.compile(r"[a-z]+")
_TOKEN = re.compile(r"\d+(?:[.,/]\d+)*%?|[a-z][a-z0-9']*|[;:]")
_SENTENCE_END = re.compile(r"(?<!\b[a-z])(?<!\bvs)(?<!\bdr)[.!?](?=\s)|\n+", re.IGNORECASE)
_STEMMER = snowballstemmer.stemmer("english")


@dataclass(frozen=True, slots=True)
class Statement:
    """One sentence: its content terms (stems, "no:"-prefixed when negated) and their surface words."""

    index: int
    terms: frozenset[str]
    words: dict[str, str]  # term -> the word as written (first occurrence)
    tokens: tuple[str, ...] = ()  # every word of the sentence, lower case, function words included
    text: str = ""  # the sentence as written (its abbreviations expanded)

    def shortened(self, short: str) -> frozenset[str]:
        """The terms of this sentence that ``short`` abbreviates, when it is an abbreviation of its words: the start
        of one word ("abd" for "abdominal", "bilat" for "bilaterally") or the initials of consecutive words ("ttp"
        for "tenderness to palpation", "ra" for "room air")."""
        if len(short) < 2 or not short.isalpha():
            return frozenset()
        longer = {t for t, w in self.words.items() if len(short) >= 3 and len(w) > len(short) and w.startswith(short)}
        if longer:
            return frozenset(longer)
        for start in range(len(self.tokens) - len(short) + 1):
            run = self.tokens[start : start + len(short)]
            if "".join(word[0] for word in run) == short:
                return frozenset(t for t, w in self.words.items() if w in run)
        return frozenset()


def normalise(text: str) -> str:
    """The text with clinical abbreviations expanded to one canonical form ("pt" -> "patient")."""
    text = _PLACEHOLDER.sub(lambda m: f" {m.group(1).lower()}{m.group(2)} ", text)
    text = _EVERY_HOURS.sub(lambda m: f"q{m.group(1)}h", text)
    for pattern, replacement in (*CASED, *_ABBREVIATIONS):
        text = pattern.sub(replacement, text)
    return text


def statements(text: str) -> list[Statement]:
    """The sentences of ``text`` that hold at least one content term, in order."""
    out: list[Statement] = []
    for sentence in _SENTENCE_END.split(normalise(text)):
        words = _terms(sentence.lower())
        if words:
            out.append(Statement(len(out), frozenset(words), words, tuple(_WORD.findall(sentence.lower())),
                                 " ".join(sentence.split())))  # fmt: skip
    return out


def _terms(sentence: str) -> dict[str, str]:
    """Content terms of one lower-cased sentence, in order, with negation scopes applied."""
    sentence = NEGATION_PHRASES.sub(" no ", POST_NEGATION.sub(f" {POST} ", NEW_CLAUSE.sub(" ; ", sentence)))
    terms: list[tuple[str, str]] = []  # (term, word as written)
    clause = 0  # index in terms where the current clause starts
    scope = 0  # content terms still in the scope of a negation trigger
    for token in _TOKEN.findall(sentence.replace("-", " ")):
        if token in NEGATION:
            scope = NEGATION_TERMS
        elif token in CLAUSE_BREAKS:
            clause, scope = len(terms), 0
        elif token == POST:
            first = max(clause, len(terms) - NEGATION_TERMS)
            terms[first:] = [(_negated(t), w) for t, w in terms[first:]]
        elif token not in STOPWORDS and (len(token) > 1 or token.isdigit()):
            term = _term(NUMBER_WORDS.get(token, token))
            terms.append((_negated(term) if scope > 0 else term, token))
            scope = max(0, scope - 1)
    words: dict[str, str] = {}
    for term, word in terms:
        words.setdefault(term, word)  # the first occurrence names the term
    return words


def _negated(term: str) -> str:
    return term if term.startswith("no:") else f"no:{term}"


@functools.lru_cache(maxsize=1 << 16)  # clinical vocabulary repeats; stemming is most of cef-lite's time
def _term(token: str) -> str:
    """A number without cosmetic zeros ("40.0" -> "40"), a word as its stem."""
    if token[0].isdigit():
        if "." in token and "/" not in token and not token.endswith("%"):
            token = token.rstrip("0").rstrip(".")
        return token.replace(",", "")
    return str(_STEMMER.stemWord(token.strip("'")))
