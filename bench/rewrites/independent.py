"""Faithful rewrites of clinical notes, for measuring how often the fidelity judge cries wolf.

Two generators restate a note without changing what it says: ``clinical_rewording`` as another clinician would write
it (synonyms, the shorthand of the wards, clauses moved, long sentences split) and ``plain_words`` as it would be put
to a lay reader (clinical terms in everyday words, the same restructuring). A judge that flags their output flags a
faithful rewrite: a false alarm. ``preserved`` is the guard that each rewrite keeps the note's checkable facts.

Written independently of the judge: the phrase tables here were drawn from the tuning half of MEDEC
(``corpora.half``) without reading the judge's code or its vocabulary tables, so that the measurement does not share
the judge's blind spots.

Every rewrite is sentence by sentence: a sentence's rewrite depends only on its own text and the seed
(``random.Random(f"{seed}:{sentence}")``), so two versions of a note that differ in one sentence are rewritten
identically everywhere else. Lines stay lines (MEDEC's lab values are one to a line, without a full stop).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ------------------------------------------------------------------------------------------------------ sentences

_SENTENCE_GAP = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)]?\s+")
_ABBREVIATED = re.compile(r"\b(?:dr|mr|mrs|ms|st|vs|approx|e\.g|i\.e)\.$", re.IGNORECASE)
_STARTS_SENTENCE = re.compile(r"[A-Z0-9\"'\u201c\u2018(\[]")


def segments(text: str) -> Iterator[tuple[str, bool]]:
    """The note in order as (piece, is_sentence); the pieces join back to ``text``. The others are the white space
    between sentences and the line breaks. A sentence ends at . ! or ? before white space and a capital, a digit or
    the end of the line; a line without such an ending (a lab value) is one sentence.
    """
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        start = len(body) - len(body.lstrip())
        if start:
            yield body[:start], False
        for gap in _SENTENCE_GAP.finditer(body, start):
            after = body[gap.end() :]
            if (after and not _STARTS_SENTENCE.match(after)) or _ABBREVIATED.search(body[start : gap.start()]):
                continue
            cut = gap.start() + len(gap.group().rstrip()) if gap.group()[0] in "\"'\u201d\u2019)" else gap.start()
            if cut > start:
                yield body[start:cut], True
            yield body[cut : gap.end()], False
            start = gap.end()
        if start < len(body):
            yield body[start:], True
        if len(line) > len(body):
            yield line[len(body) :], False


def _rewrite(text: str, seed: int, sentence_rewrite: Callable[[str, random.Random], str]) -> str:
    return "".join(
        sentence_rewrite(piece, random.Random(f"{seed}:{piece}")) if is_sentence else piece
        for piece, is_sentence in segments(text)
    )


# -------------------------------------------------------------------------------------------------- phrase tables


@dataclass(frozen=True)
class Rule:
    """A phrase (a regular expression, matched without regard to case) and what may stand in its place; no options
    keeps the phrase as it is (it shields a fixed term from the shorter rules inside it).
    """

    pattern: str
    options: tuple[str, ...]
    length: int  # of the phrase as written, before the word boundaries: the longest phrase wins at a place


def rule(pattern: str, *options: str) -> Rule:
    """A rule whose phrase must stand as whole words where it begins or ends with a letter."""
    head = r"(?<![\w-])" if pattern[0].isalpha() or pattern.startswith(("(?:(?<=\\b", "(?<!")) else ""
    tail = r"(?![\w-])" if pattern[-1].isalpha() else ""
    return Rule(f"{head}{pattern}{tail}", options, len(pattern))


def after(*words: str) -> str:
    """A look-behind: the phrase follows one of ``words`` and a space."""
    return "(?:" + "|".join(f"(?<=\\b{w} )" for w in words) + ")"


_NOT_A_DURATION = "".join(f"(?<!{unit} )" for unit in ("hour", "day", "week", "month", "year"))
_NOT_A_DURATION += "".join(f"(?<!{unit}s )" for unit in ("hour", "day", "week", "month", "year"))
_PASSIVE = after("is", "are", "was", "were", "been", "be", "being")
_PREDICATE = after("is", "are", "was", "were", "and", "but", "remains", "otherwise")  # not before a noun

# How another clinician would put it: verbs and phrases, then the shorthand of the wards. Diagnoses, drugs and
# organisms are never touched here.
CLINICAL: tuple[Rule, ...] = (
    rule("presents with", "comes in with", "is seen with"),
    rule("presented with", "came in with", "was seen with"),
    rule("presents to", "comes to"),
    rule("comes to(?= (?:the|his|her|an?) )", "presents to"),
    rule("came to(?= (?:the|his|her|an?) )", "presented to"),
    rule("brought(?= to )", "taken"),
    rule("because of", "due to", "on account of"),
    rule(_PASSIVE + "administered", "given"),
    rule("reveals", "shows"),
    rule("revealed", "showed"),
    rule("demonstrates", "shows"),
    rule("demonstrated", "showed"),
    rule("shows", "reveals", "demonstrates"),
    rule("showed", "revealed", "demonstrated"),
    rule("elevated", "raised"),
    rule("decreased", "reduced", "diminished"),
    rule("subsequently", "then", "later"),
    rule("(?:is|are|was|were) noted", "{be} seen", "{be} present"),
    rule("significant for", "notable for"),
    rule("notable for", "significant for"),
    rule("complains of", "reports", "describes"),
    rule("complaining of", "reporting"),
    rule("complained of", "reported"),
    rule("was started on", "was put on", "began"),
    rule(after("and", "been", "were") + "started on", "put on"),
    rule("denies any", "reports no"),
    rule("denies", "reports no"),
    rule("denied", "reported no"),
    rule("unable to", "not able to"),
    rule("^physical examination shows(?= an? )", "on examination, there is", "on exam, there is"),
    rule("physical examination shows", "exam shows", "examination reveals"),
    rule("physical examination", "exam", "examination"),
    rule("physical exam", "exam"),
    rule("examination", "exam"),
    rule("examinations", "exams"),
    rule("the remainder of", "the rest of"),
    rule("laboratory studies", "labs", "lab studies"),
    rule("currently", "at present", "now"),
    rule("initially", "at first"),
    rule("approximately", "about", "roughly"),
    rule("prior to", "before"),
    rule("(?<!the )following(?= (?:a|an|the|his|her|\\w+ing)\\b)", "after"),
    rule("underwent", "had"),
    rule(_PASSIVE + "performed", "done", "carried out"),
    rule("^however,", "but"),
    rule("^in addition,", "also,"),
    rule("states that", "says that", "reports that"),
    rule("states", "says"),
    rule("appears", "looks", "seems"),
    rule("profuse", "copious", "heavy"),
    rule("diffuse", "widespread"),
    rule("recurrent", "repeated"),
    rule("progressive", "worsening"),
    rule("progressively", "steadily"),
    rule("during this (?:time|period)", "over this time", "in this period"),
    # the shorthand of the wards
    rule("(?<=\\d)-year-old", " y/o", " yo", "-yr-old"),
    rule("(?<=\\d)-month-old", " m/o", "-mo-old"),
    rule("(?<=\\d)-hour", "-hr"),
    rule("(?<=\\d)-week", "-wk"),
    rule("(?<=\\d )hours(?! ago)", "hrs", "h"),
    rule("(?<=\\d )minutes(?! ago)", "min"),
    rule("(?<=\\d )weeks(?! ago)", "wks"),
    rule("(?<=\\d )months(?! ago)", "mos"),
    rule("(?<=\\d )years(?! ago)", "yrs"),
    rule("past medical history", "PMH"),
    rule(_NOT_A_DURATION + "a history of", "a hx of"),
    rule(_NOT_A_DURATION + "history of", "h/o", "hx of"),
    rule("emergency department", "ER", "ED"),
    rule("emergency room", "ER"),
    rule("physician", "doctor", "clinician"),
    rule("patient", "pt"),
    rule("medications", "meds"),
    rule("medication", "med"),
    rule("symptoms", "sx"),
    rule("temperature", "temp"),
    rule("blood pressure", "BP"),
    rule("pulse(?= (?:is|of|was|rate)\\b)", "HR", "heart rate"),
    rule("respirations are", "RR is", "resp rate is"),
    rule("respiratory rate", "RR"),
    rule("pulse oximetry", "pulse ox"),
    rule("oxygen saturation", "O-sat", "oxygen sat"),
    rule("on room air", "on RA"),
    rule("within normal limits", "WNL", "normal"),
    rule("within the reference ranges?", "WNL"),
    rule("vital signs", "vitals"),
    rule("shortness of breath", "SOB"),
    rule("intravenous", "IV"),
    rule("intravenously", "IV"),
    rule("x-ray of the chest", "chest x-ray", "CXR"),
    rule("chest x-ray", "CXR"),
    rule("electrocardiogram", "ECG", "EKG"),
    rule("electrocardiography", "ECG", "EKG"),
    rule("complete blood count", "CBC"),
    rule("tenderness to palpation", "TTP"),
    rule("clear to auscultation bilaterally", "CTAB"),
    rule("twice daily", "BID", "twice a day"),
    rule("three times daily", "TID"),
    rule("once daily", "once a day"),
    rule("abdominal", "abd"),
    rule("bilaterally", "on both sides", "bilat"),
)

# Clinical terms as a lay reader would have them. A diagnosis is replaced only by words that name the same thing;
# the terms that would lose meaning in plain words are shielded (no options).
PLAIN: tuple[Rule, ...] = (
    # diagnoses and findings that have an exact everyday name
    rule("myocardial infarction", "heart attack"),
    rule("cerebrovascular accident", "stroke"),
    rule("(?:pulmonary|portal|intracranial|ocular|renovascular|gestational|idiopathic) hypertension"),
    rule("pulmonary embolism"),
    rule("arterial hypertension", "high blood pressure"),
    rule("hypertension", "high blood pressure"),
    rule("hypotension", "low blood pressure"),
    rule("hypercholesterolemia", "high cholesterol"),
    rule("hyperlipidemia", "high blood fats", "high levels of fat in the blood"),
    rule("hypothyroidism", "low thyroid function"),
    rule("diabetes mellitus", "diabetes"),
    rule("gastroesophageal reflux disease", "acid reflux disease"),
    rule("gastroesophageal reflux", "acid reflux"),
    rule("osteoarthritis", "wear-and-tear arthritis"),
    rule("cirrhosis", "liver scarring"),
    rule("nephrolithiasis", "kidney stones"),
    rule("atopic dermatitis", "eczema"),
    rule("(?:contact|seborrheic|perioral|stasis|diaper) dermatitis"),
    rule("dermatitis herpetiformis"),
    rule("dermatitis", "skin inflammation"),
    rule("sinusitis", "sinus inflammation"),
    rule("pharyngitis", "throat inflammation"),
    rule("conjunctivitis", "inflammation of the eye lining"),
    rule("sinus tachycardia"),
    rule("sudden cardiac death"),
    rule("cardiac arrest"),
    rule("respiratory syncytial virus"),
    rule("tachycardia", "fast heart rate"),
    rule("tachycardic", "with a fast heart rate"),
    rule("bradycardia", "slow heart rate"),
    rule("tachypnea", "fast breathing"),
    rule("tachypneic", "breathing fast"),
    rule("dyspnea", "shortness of breath", "trouble breathing"),
    rule("afebrile", "without fever"),
    rule("febrile", "feverish"),
    rule("emesis", "vomiting"),
    rule("pruritus", "itching"),
    rule("pruritic", "itchy"),
    rule("edema", "swelling"),
    rule("edematous", "swollen"),
    rule("erythema", "redness"),
    rule("erythematous", "red", "reddened"),
    rule("syncope", "fainting"),
    rule("syncopal", "fainting"),
    rule("diaphoresis", "heavy sweating"),
    rule("diaphoretic", "sweaty"),
    rule("rhinorrhea", "runny nose"),
    rule("hematuria", "blood in the urine"),
    rule("pyuria", "pus in the urine"),
    rule("dysuria", "painful urination", "pain on urination"),
    rule("micturition", "urination"),
    rule("nocturia", "waking at night to urinate"),
    rule("melena", "black, tarry stools"),
    rule("hematemesis", "vomiting of blood"),
    rule("hemoptysis", "coughing up blood"),
    rule("dysphagia", "trouble swallowing"),
    rule("insomnia", "trouble sleeping"),
    rule("myalgias?", "muscle aches"),
    rule("arthralgias?", "joint pain"),
    rule("malaise", "a general feeling of being unwell"),
    rule("lethargic", "very drowsy"),
    rule("fatigue", "tiredness"),
    rule("palpitations", "heart pounding", "pounding heartbeats"),
    rule("jaundice", "yellowing of the skin"),
    rule("scleral icterus", "yellowing of the whites of the eyes"),
    rule("pallor", "paleness"),
    rule("cyanosis", "bluish skin"),
    rule("cyanotic", "bluish"),
    rule("paresthesias?", "pins and needles"),
    rule("ptosis", "eyelid drooping"),
    rule("tremor", "trembling", "shaking"),
    rule("hepatosplenomegaly", "enlargement of the liver and spleen"),
    rule("hepatomegaly", "enlargement of the liver"),
    rule("splenomegaly", "enlargement of the spleen"),
    rule("lymphadenopathy", "lymph node swelling", "swollen lymph nodes"),
    rule("adenopathy", "gland swelling"),
    rule("inspiratory stridor", "a high-pitched noise on breathing in"),
    rule("stridor", "high-pitched noisy breathing"),
    rule("rales", "crackling sounds"),
    rule("crackles", "crackling sounds"),
    rule("sputum", "phlegm"),
    rule("petechiae", "tiny red spots"),
    rule("ecchymoses", "bruises"),
    rule("ecchymosis", "bruising"),
    rule("lacerations?", "cut{s}"),
    rule("fracture", "break"),
    rule("fractures", "breaks"),
    rule("fractured", "broken"),
    rule("hemorrhages?", "bleeding"),
    rule("induration", "hardening"),
    rule("effusion", "fluid buildup"),
    rule("ascites", "fluid in the belly"),
    rule("ulceration", "open sore"),
    rule("purulent", "pus-filled"),
    rule("malignancy", "cancer"),
    rule("malignant", "cancerous"),
    rule("asymptomatic", "without symptoms"),
    rule("painless", "without pain"),
    rule("nonproductive cough", "cough without phlegm"),
    rule("non-?bloody diarrhea", "diarrhea without blood"),
    rule("non-?bloody stools?", "stool{s} without blood"),
    rule("non-?bloody (?:vomiting|emesis)", "vomiting without blood"),
    rule(_PREDICATE + "non-?bloody", "not bloody"),
    rule(_PREDICATE + "non-?tender", "not tender", "not sore"),
    rule("tenderness to palpation", "soreness when pressed"),
    rule("tenderness", "soreness"),
    rule("tender", "sore"),
    rule("unremarkable", "normal"),
    rule("distended", "swollen", "bloated"),
    rule("bowel sounds", "gut sounds"),
    # the body
    rule("abdominal", "belly"),
    rule("abdomen", "belly"),
    rule("epigastric", "upper belly"),
    rule("umbilicus", "belly button"),
    rule("thorax", "chest"),
    rule("thoracic", "chest"),
    rule("upper and lower extremities", "arms and legs"),
    rule("upper extremities", "arms"),
    rule("lower extremities", "legs"),
    rule("upper extremity", "arm"),
    rule("lower extremity", "leg"),
    rule("extremities", "arms and legs", "limbs"),
    rule("extremity", "limb"),
    rule("axilla", "armpit"),
    rule("axillary", "armpit"),
    rule("inguinal", "groin"),
    rule("cardiopulmonary", "heart and lung"),
    rule("cardiac", "heart"),
    rule("pulmonary", "lung"),
    rule("renal", "kidney"),
    rule("hepatic", "liver"),
    rule("gastric", "stomach"),
    rule("cerebral", "brain"),
    rule("ocular", "eye"),
    rule("ophthalmic", "eye"),
    rule("ophthalmologic", "eye"),
    rule("neurologic(?:al)?", "nervous system"),
    rule("cutaneous", "skin"),
    rule("subcutaneous", "under-the-skin"),
    rule("pharynx", "throat"),
    rule("oropharynx", "back of the mouth"),
    rule("trachea", "windpipe"),
    rule("larynx", "voice box"),
    rule("esophagus", "food pipe"),
    rule("sternum", "breastbone"),
    rule("clavicle", "collarbone"),
    rule("patella", "kneecap"),
    rule("femur", "thighbone"),
    rule("scapula", "shoulder blade"),
    rule("conjunctivae", "eye linings"),
    rule("conjunctiva", "eye lining"),
    rule("conjunctival", "eye-lining"),
    rule("sclerae", "whites of the eyes"),
    rule("mucous membranes", "moist linings of the mouth"),
    rule("oral cavity", "mouth"),
    rule("anterior", "front"),
    rule("posterior", "back"),
    rule("bilateral", "two-sided"),
    rule("bilaterally", "on both sides"),
    # care, tests and treatment
    rule(_PASSIVE + "administered", "given"),
    rule("physician", "doctor"),
    rule("pediatrician", "children's doctor"),
    rule("infant", "baby"),
    rule("medications", "medicines"),
    rule("medication", "medicine"),
    rule("analgesics", "painkillers"),
    rule("analgesia", "pain relief"),
    rule("antiemetics", "anti-nausea drugs"),
    rule("antipyretics", "fever reducers"),
    rule("intravenous fluids", "fluids through a vein"),
    rule("intravenous lines?", "line{s} into a vein"),
    rule("intravenous", "into-the-vein"),
    rule("intravenously", "through a vein"),
    rule("an oral contraceptive(?: pill)?", "a birth control pill"),
    rule("oral contraceptive pills?", "birth control pill{s}"),
    rule("oral contraceptives", "birth control pills"),
    rule("ingested", "swallowed"),
    rule("ingestion", "swallowing"),
    rule("exertion", "effort", "physical effort"),
    rule("ultrasonography", "ultrasound"),
    rule("radiographs?", "x-ray{s}"),
    rule("urinalysis", "urine test"),
    rule("lumbar puncture", "spinal tap"),
    rule("cerebrospinal fluid", "spinal fluid"),
    rule("fundoscopy", "an exam of the back of the eye"),
    rule("clear to auscultation", "clear when listened to with a stethoscope"),
    rule("on auscultation", "with a stethoscope"),
    rule("auscultation", "listening with a stethoscope"),
    rule("on palpation", "when pressed", "to the touch"),
    rule("palpated", "felt"),
    rule("visual acuity", "sharpness of vision"),
    rule("an oxygen saturation", "a blood oxygen level"),
    rule("oxygen saturation", "blood oxygen level"),
    rule("pulse oximetry", "a finger oxygen sensor"),
    rule("respirations are", "breathing rate is"),
    rule("respirations", "breaths"),
    rule("laboratory studies", "lab tests"),
    rule("laboratory", "lab"),
    rule("serum", "blood"),
    rule("leukocyte count", "white blood cell count"),
    rule("leukocytes", "white blood cells"),
    rule("erythrocytes", "red blood cells"),
    rule("electrolytes", "body salts"),
    rule("electrocardiogram", "heart tracing"),
    rule("emergency department", "emergency room"),
    rule("weeks'? gestation", "weeks of pregnancy"),
    rule("menses", "periods"),
    rule("last menstrual period", "last period"),
    rule("menarche", "first period"),
    rule("rupture of membranes", "breaking of the waters"),
    rule("unable to", "not able to"),
    rule("denies any", "reports no"),
    rule("denies", "reports no"),
    rule("reveals", "shows"),
    rule("revealed", "showed"),
    rule("demonstrates", "shows"),
    rule("demonstrated", "showed"),
    rule("subsequently", "then", "later"),
    rule("approximately", "about"),
    rule("prior to", "before"),
)

_ARTICLE_BEFORE = re.compile(r"\b(an?)\s$", re.IGNORECASE)
_AN_LETTERS = "AEFHILMNORSX"  # spelled-out letters that begin with a vowel sound: an ER, an HIV test


def _wants_an(word: str) -> bool:
    if len(word) > 1 and word[:2].isupper():
        return word[0] in _AN_LETTERS
    return word[:1].lower() in "aeiou" or word.lower().startswith("x-")


class Lexicon:
    """A table of rules applied in one pass, the longest phrase first at each place, so no rewrite is rewritten."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = tuple(sorted(rules, key=lambda r: -r.length))
        phrases = "|".join(f"(?P<r{i}>{r.pattern})" for i, r in enumerate(self.rules))
        self.regex = re.compile(f"(?<![^\\W\\d_])(?:{phrases})", re.IGNORECASE)  # never inside a word: fast

    def apply(self, sentence: str, rng: random.Random) -> str:
        out, last = "", 0
        for match in self.regex.finditer(sentence):
            found = match.group()
            replacement = self._choose(match, rng)
            out += sentence[last : match.start()]
            article = _ARTICLE_BEFORE.search(out)
            if article and replacement != found:  # the article the new word wants
                fixed = "an" if _wants_an(replacement) else "a"
                out = out[: article.start()] + (fixed.capitalize() if article.group(1)[0].isupper() else fixed) + " "
            out += replacement
            last = match.end()
        return out + sentence[last:]

    def _choose(self, match: re.Match[str], rng: random.Random) -> str:
        found = match.group()
        options = self.rules[int(match.lastgroup[1:])].options if match.lastgroup else ()
        if not options or (found[0].isupper() and match.start() > 0):  # a capital inside a sentence: a name, kept
            return found
        choice = rng.choice(options)
        choice = choice.replace("{be}", found.split()[0].lower()).replace("{s}", "s" if found.endswith("s") else "")
        if found[0].isupper() and choice[0].islower():
            choice = choice[0].upper() + choice[1:]
        return choice


# -------------------------------------------------------------------------------------------------- restructuring


_ITEM = re.compile(r"[A-Za-z][\w' ]*? (?:is|are|was|were) [^,]*\d[^,]*")
_VITALS = re.compile(r"(?P<owner>(?:Her|His|Their|The [\w ]+?['\u2019]s) )?(?P<items>.+?)\.")
_FRONTED = re.compile(r"(?P<front>[A-Z][a-z]*|\d+)(?P<rest>(?: [^ ,;:()]+){1,6}), (?P<main>.+)\.")
_FRONT_OPENERS = _words(
    "during over after before since on at in upon within while when by throughout yesterday today earlier later "
    "initially recently one two three four five six seven eight nine ten twenty thirty several a an"
)
_NOT_FRONTED = _words("addition contrast general summary particular fact other")
_AGO = re.compile(
    r"(?P<subject>She|He|They|It|The patient|The pt|Her \w+|His \w+) (?P<rest>[^,;:()]+?) "
    r"(?P<ago>(?:about |approximately )?(?:\d+|one|two|three|four|five|six|several|a few) "
    r"(?:minutes?|hours?|days?|weeks?|months?|years?) ago)\."
)
_CLAUSE_JOINS = re.compile(
    r" (?:but|that|which|who|when|where|while|because|until) "
    r"| (?:and|or) (?:is|are|was|were|has|have|had|does|did|she|he|they|it|her|his|the|\w+ed|\w+s)\b",
    re.IGNORECASE,
)
_COPULAS = _words("is are was were has have had")
_FINITE = re.compile(r"\b(?:is|are|was|were|has|have|had|does|did|shows|showed|reveals|revealed|\w+ed|\w+es)\b")


def _balanced(text: str) -> bool:
    return text.count("(") == text.count(")") and text.count("[") == text.count("]")


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def shuffle_vitals(sentence: str, rng: random.Random) -> str | None:
    """'Her temperature is 37 C, pulse is 80/min, and blood pressure is 120/80 mm Hg.' in another order."""
    match = _VITALS.fullmatch(sentence)
    if not match:
        return None
    items = re.split(r",? and |, ", match["items"])
    if len(set(items)) < 3 or len(set(items)) < len(items) or not all(_ITEM.fullmatch(i) for i in items):
        return None
    owner = match["owner"] or ""
    if not owner and items[0][1:2].islower():
        items[0] = items[0][0].lower() + items[0][1:]
    order = items[:]
    while order == items:
        rng.shuffle(order)
    if not owner:
        order[0] = _upper_first(order[0])
    return f"{owner}{', '.join(order[:-1])}, and {order[-1]}."


def split_long(sentence: str, rng: random.Random) -> str | None:
    """A long sentence split in two at '; ' or at ', and ' before a clause with its own subject."""
    cuts = list(re.finditer(r"; (?=[a-z])|, and (?=(?:she|he|they|there|it|his|her|the) \w)", sentence))
    rng.shuffle(cuts)
    for cut in cuts:
        left, right = sentence[: cut.start()], sentence[cut.end() :]
        if len(left.split()) < 4 or len(right.split()) < 3 or not (_balanced(left) and _balanced(right)):
            continue
        if not (_FINITE.search(left) and _FINITE.search(right)):
            continue
        if ", " in left and right.split()[0] in ("his", "her", "the"):  # a list's last item, not a clause
            continue
        if right[-1] not in ".!?":
            continue
        return f"{left}. {_upper_first(right)}"
    return None


def move_opening_phrase(sentence: str, rng: random.Random) -> str | None:
    """'Two days ago, she fell.' -> 'She fell two days ago.' and 'She fell two days ago.' -> the other way."""
    del rng
    match = _FRONTED.fullmatch(sentence)
    if match:
        front, rest, main = match["front"], match["rest"], match["main"]
        words = rest.split()
        if front.lower() not in _FRONT_OPENERS and not front.isdigit():
            return None
        if words[0].lower() in _NOT_FRONTED or words[0].endswith("ing") or front.endswith("ing"):
            return None  # 'After examining the patient, he ...' would change who did the examining
        if not (main[0].islower() and _balanced(main)) or _CLAUSE_JOINS.search(main) or re.search(r"[,;:\d]", main):
            return None
        lowered = front if front.isdigit() else front.lower()
        return f"{_upper_first(main)} {lowered}{rest}."
    match = _AGO.fullmatch(sentence)
    if not match or _CLAUSE_JOINS.search(match["rest"]) or match["rest"].split()[-1] in _COPULAS:
        return None
    subject = match["subject"]
    subject = subject[0].lower() + subject[1:]
    return f"{_upper_first(match['ago'])}, {subject} {match['rest']}."


_RESTRUCTURES: tuple[Callable[[str, random.Random], str | None], ...] = (
    shuffle_vitals,
    split_long,
    move_opening_phrase,
)


def _restructure(sentence: str, rng: random.Random) -> str:
    for restructure in _RESTRUCTURES:
        if rng.random() < 0.7:
            done = restructure(sentence, rng)
            if done is not None:
                return done
    return sentence


# ----------------------------------------------------------------------------------------------------- generators

CLINICAL_LEXICON = Lexicon(CLINICAL)
PLAIN_LEXICON = Lexicon(PLAIN)


def _clinical_sentence(sentence: str, rng: random.Random) -> str:
    return _restructure(CLINICAL_LEXICON.apply(sentence, rng), rng)


def _plain_sentence(sentence: str, rng: random.Random) -> str:
    return _restructure(PLAIN_LEXICON.apply(sentence, rng), rng)


def clinical_rewording(text: str, seed: int) -> str:
    """The note as another clinician would write it: synonyms, ward shorthand, clauses moved, long sentences split."""
    return _rewrite(text, seed, _clinical_sentence)


def plain_words(text: str, seed: int) -> str:
    """The note as it would be put to a lay reader: clinical terms in everyday words, the same restructuring."""
    return _rewrite(text, seed, _plain_sentence)


RULE_COUNTS = {"clinical_rewording": len(CLINICAL) + len(_RESTRUCTURES), "plain_words": len(PLAIN) + len(_RESTRUCTURES)}

# ---------------------------------------------------------------------------------------------------------- guard

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_NEGATORS = _words("no not without never none nor neither cannot deny denies denied unable")
_NEGATED_TERMS = _words("afebrile asymptomatic painless")
_INTRODUCED = frozenset(
    word
    for table in (CLINICAL, PLAIN)
    for r in table
    for option in r.options
    for word in _WORD.findall(option)
    if word[0].isupper()
)


def _negations(text: str) -> int:
    words = [w.lower() for w in _WORD.findall(text)]
    return sum(
        w in _NEGATORS or w in _NEGATED_TERMS or w.endswith(("n't", "n\u2019t")) or (w.startswith("non") and len(w) > 5)
        for w in words
    )


def _sides(text: str) -> Counter[str]:
    return Counter(m.group(1).lower() for m in re.finditer(r"\b(left|right)", text, re.IGNORECASE))


def _names(text: str) -> Counter[str]:
    """Capitalised words that do not begin a sentence (names, eponyms, units such as C and Hg), less the
    abbreviations the generators bring in.
    """
    names: Counter[str] = Counter()
    for piece, is_sentence in segments(text):
        if is_sentence:
            words = re.findall(r"\w[\w'\u2019-]*", piece)[1:]
            names.update(w for w in words if w[0].isupper() and w not in _INTRODUCED)
    return names


def preserved(original: str, rewritten: str) -> bool:
    """Whether the rewrite keeps the checkable facts: the multiset of numbers, the count of negations (no, not,
    without, denies, non-..., afebrile, ...), the left and right words, and the capitalised words inside sentences.
    """
    return (
        Counter(_NUMBER.findall(original)) == Counter(_NUMBER.findall(rewritten))
        and _negations(original) == _negations(rewritten)
        and _sides(original) == _sides(rewritten)
        and _names(original) == _names(rewritten)
    )
