"""Red-flag symptoms in the request that the answer does not escalate (docs/judges.md section 3).

A patient who describes chest pain with sweating, stroke signs or suicidal thoughts must be told to get
emergency help; an answer that offers rest and paracetamol instead is the harm. This check finds red flags in
the request (``Context.request_text``: the user's turns and supplied documents) and, when there is one and the
answer holds no escalation, returns one finding spanning the whole answer: a rule acting on it blocks or
flags the answer as a whole.

Red flags (RED_FLAGS): a symptom phrase on its own ("crushing chest pain", "worst headache of my life", "face
drooping", "can't breathe", "want to end my life", "vomiting blood"), or two that together make one (chest
pain with sweating or pain spreading to the arm or jaw; throat or lip swelling with a sting, a food or an
allergy; a seizure with a duration of 5 minutes or more; fever with a stiff neck; fainting or severe
abdominal pain in pregnancy; fever in a baby under 3 months). A phrase does not count when negated just
before it ("no chest pain", "denies suicidal thoughts", "without sweating", "history of"), up to four words
back and never across punctuation or "but"/"and"; "I don't know if ..." and "I can't stop ..." are not
negations.

Escalation in the answer (ESCALATION): emergency numbers (911, 999, 112, 988), emergency services, the
emergency department, A&E, ER, an ambulance, "seek immediate/urgent medical attention", crisis lines,
Samaritans, poison control; not when negated ("you don't need to go to A&E"), but "don't hesitate to call
999" and "do not drive yourself to A&E" still escalate. Any escalation counts: the check does not grade whether
its urgency fits the flag. A question that names a red-flag symptom ("what if his face droops on one side?")
counts by design: the answer should still say to call an ambulance.

Left out: chest pain or breathlessness alone (mostly musculoskeletal or benign, and too common to gate every
answer), sepsis, cauda equina, testicular torsion, DKA, sudden loss of vision and head injury with confusion
(not yet curated), clinical abbreviations ("SI", "CP", "SOB"), and "suicide" as a topic ("suicide risk
assessment") rather than a patient's words.

The answer is checked as given: on a stream, a rule should apply this check to the complete answer (or hold
the tail), since the escalation may come last. Speed: a Hyperscan prefilter (in one pass with the
prompt-injection patterns, REQUEST_PREFILTERS) says which terms can occur at all; each of those runs only in
windows around its needles (text.scan.Needles), on the folded request; the second term of a pair is looked
for only when the first is there, and only near it, where a second prefilter over that region allows it. The
request's red flags are found while the upstream works on the answer (``prepare``, PolicyEngine.while_waiting).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from policies.checks.base import REQUEST_PREFILTERS, Context, Finding
from text.scan import Needles, Prefilter, fold, spaced, windows


def _compile(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """Compiles with every apostrophe also matching the typographic one (U+2019)."""
    return re.compile(pattern.replace("'", "['\u2019]"), flags)


# The red-flag ids, most urgent first: a finding names the first one the request holds.
RED_FLAGS = (
    "suicidal",
    "overdose",
    "chest_pain",
    "stroke_signs",
    "breathing_difficulty",
    "anaphylaxis",
    "thunderclap_headache",
    "prolonged_seizure",
    "major_bleeding",
    "meningitis_signs",
    "pregnancy_emergency",
    "infant_fever",
)
_WHO = r"(?:my|his|her|their|the|our|your)"
_SELF = r"(?:my|him|her|them)sel(?:f|ves)"
_NUMBER = r"(?:\d{1,3}|a|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty)"
# term: pattern. A term is a red flag itself (DIRECT) or one half of a pair (PAIRS). Terms are looked for
# independently, so one phrase may be two terms ("vomiting blood": bleeding, and the nausea of chest pain).
_TERMS: dict[str, str] = {
    "suicidal": (
        r"suicidal|(?:commit|committing|attempt(?:ed|ing)?|thinking\s+(?:about|of)|thoughts?\s+(?:of|about))\s+suicide"
        rf"|suicide\s+(?:attempt|plan|note)s?|kill(?:ing)?\s+{_SELF}|end(?:ing)?\s+{_WHO}\s+(?:own\s+)?li(?:fe|ves)"
        rf"|end\s+it\s+all|take\s+{_WHO}\s+(?:own\s+)?li(?:fe|ves)|want(?:s|ed)?\s+to\s+die"
        r"|(?:don't|do\s+not|doesn't|does\s+not)\s+want\s+to\s+(?:live|be\s+alive|be\s+here|wake\s+up)"
        r"|better\s+off\s+dead|no\s+(?:reason|point)\s+(?:to|in)\s+(?:live|living|going\s+on|carry(?:ing)?\s+on)"
        rf"|self[- ]?harm\w*|(?:cutting|harming|hurting)\s+{_SELF}"
        rf"|(?:want|wants|wanted|urges?|thoughts?|thinking)\s+(?:about\s+|of\s+)?(?:to\s+)?(?:hurt|harm|cut)\w*\s+{_SELF}"
    ),
    "overdose": (
        r"overdos(?:ed|ing)|(?:took|taken|swallowed|had)\s+an\s+overdose"
        r"|(?:took|taken|swallowed)\s+(?:\w+\s+){0,2}?(?:too\s+m(?:any|uch)\b|a\s+handful|(?:a|the|an)\s+(?:whole|entire"
        r"|full)\s+(?:bottle|packet|pack|box|strip|tub)|all\s+(?:of\s+)?(?:my|his|her|their|the)\s+\w*\s*(?:tablets"
        r"|pills|capsules|medicines?|medication)|(?:\d{2,}|twenty|thirty|forty|fifty)\b(?!\s*(?:hours?|hrs?|min\w*"
        r"|days?|weeks?|years?|mg|mcg|g|ml|units?|am|pm|%|[:.]\d)))"
        r"|(?:ate|eaten|swallowed|chewed)\s+(?:\w+\s+){0,3}?(?:pills|tablets|capsules)"
    ),
    "crushing_chest": (
        r"(?:crushing|squeezing)\s+(?:\w+\s+){0,2}?chest|elephant\s+(?:sitting\s+)?on\s+(?:my|his|her)\s+chest"
        r"|chest\s+(?:pain|pressure)\s+(?:\w+\s+){0,2}?(?:crushing|like\s+a\s+(?:vice|vise|weight))"
    ),
    "chest": (
        r"chest\s+(?:pains?|pressure|tightness|discomfort|heaviness|aches?|aching|hurts|hurting)"
        rf"|(?:pain|pressure|tightness|heaviness|discomfort|ache)\s+(?:in|across|on|around)\s+{_WHO}\s+chest"
        rf"|{_WHO}\s+chest\s+(?:is|feels|has\s+been)\s+(?:\w+\s+)?(?:tight|heavy|painful|sore|hurting)"
    ),
    "stroke": (
        r"(?:face|mouth|smile|lip)\s+(?:is\s+|has\s+|was\s+|started\s+|seems\s+|looks\s+)?(?:droop\w*|drop(?:ped|ping)"
        rf"|lopsided|sagging|fallen)|droop\w*\s+(?:on\s+)?(?:one\s+side\s+of\s+)?{_WHO}\s+(?:face|mouth)"
        rf"|facial\s+droop\w*|slurr\w*\s+(?:{_WHO}\s+)?(?:speech|words)"
        r"|speech\s+(?:is\s+|was\s+|became\s+|sounds\s+|seems\s+)?(?:slurr\w*|garbled|jumbled)"
        r"|(?:weak\w*|numb\w*|paraly[sz]\w*|can't\s+move)\s+(?:\w+\s+){0,3}?(?:on\s+)?one\s+side"
        r"|(?:one|left|right)[- ]sided\s+(?:weakness|numbness|paralysis)"
        rf"|(?:weakness|numbness)\s+(?:in|of|on)\s+(?:{_WHO}\s+)?(?:left|right)\s+(?:arm|leg|side|hand)"
    ),
    "breathing": (
        r"(?:difficulty|trouble|struggling|struggle|fighting|hard|problems?)\s+(?:to\s+)?breath(?:e|ing)"
        r"|breathing\s+(?:is\s+)?(?:difficult|hard|laboured|labored)"
        rf"|(?:can't|cannot|can\s+not|unable\s+to|couldn't|could\s+not)\s+(?:breathe|catch\s+{_WHO}\s+breath"
        rf"|get\s+(?:enough\s+)?air)(?!\s+(?:through|out\s+of|in\s+through)\s+{_WHO}\s+nose)|gasping"
        r"|(?:lips?|face|fingers?|tongue)\s+(?:is\s+|are\s+|looks?\s+|turning\s+|turned\s+|going\s+|gone\s+|went\s+"
        r"|(?:has|have)\s+(?:turned|gone)\s+)?(?:blue|grey|gray)|blue\s+lips|(?:not|isn't|stopped|wasn't)\s+breathing"
        r"|choking|(?:breathless|short\s+of\s+breath)\s+(?:even\s+)?at\s+rest|severe(?:ly)?\s+short(?:ness)?\s+of\s+breath"
    ),
    "anaphylaxis": (
        r"anaphyla\w*|(?:throat|airway)\s+(?:is\s+|feels\s+(?:like\s+it's\s+)?|started\s+|keeps\s+|has\s+been\s+)?"
        r"(?:closing|tightening|swelling\s+shut)|tongue\s+(?:is\s+|has\s+|started\s+|began\s+|feels\s+)?(?:swell\w*"
        rf"|swollen)|swell\w*\s+(?:of|in)\s+{_WHO}\s+tongue|(?:used|use|gave|give|given|needed)\s+(?:\w+\s+)?"
        r"(?:epi-?pen|adrenaline\s+(?:auto-?injector|pen)|jext|emerade)"
    ),
    "thunderclap": (
        r"thunderclap|worst\s+(?:\w+\s+){0,2}?headache\s+(?:of\s+(?:my|his|her|their)\s+li(?:fe|ves)|ever"
        r"|(?:i|he|she|they)(?:'ve|\s+have|\s+has|'s)\s+ever)|worst[- ]ever\s+headache"
        r"|(?:sudden\w*|abrupt\w*)\s+(?:\w+\s+){0,2}?(?:severe|excruciating|intense|terrible|agoni[sz]ing|blinding"
        r"|splitting|explosive)\s+headache|(?:severe|excruciating|intense|terrible|agoni[sz]ing|blinding|splitting"
        r"|explosive)\s+headache\s+(?:that\s+)?(?:came\s+on\s+|started\s+|hit\s+(?:me\s+)?|began\s+)?(?:suddenly"
        r"|all\s+of\s+a\s+sudden|out\s+of\s+nowhere|in\s+seconds)"
    ),
    "status": (
        r"status\s+epilepticus|back[- ]to[- ]back\s+(?:seizures|fits)|(?:seizures|fits)\s+one\s+after\s+"
        r"(?:another|the\s+other)|(?:not|hasn't|has\s+not|without)\s+(?:woken|waking|regain\w*\s+consciousness)"
        r"\s+(?:up\s+)?between"
    ),
    "bleeding": (
        r"(?:heavy|heavily|severe|profuse\w*|uncontroll?ed|uncontrollable|massive|torrential)\s+bleed\w*"
        r"|bleed\w*\s+(?:very\s+|really\s+)?(?:heavily|profusely|a\s+lot|badly|everywhere)"
        r"|bleed\w*\s+(?:that\s+|which\s+)?(?:won't|will\s+not|doesn't|does\s+not|can't|hasn't|has\s+not)\s+stop"
        r"|(?:won't|can't|cannot)\s+stop\s+(?:the\s+)?bleed\w*|(?:vomit\w*|throw\w*\s+up|threw\s+up|puk\w*"
        r"|cough\w*(?:\s+up)?|spit\w*\s+up|spat\s+up)\s+(?:up\s+)?(?:(?:some|a\s+lot\s+of|lots\s+of|fresh"
        rf"|bright\s+red|dark)\s+)?blood|blood\s+in\s+{_WHO}\s+(?:vomit|sick)|(?:black|dark)\s+(?:and\s+|,\s*)?tarry"
        r"|tarry\s+(?:black\s+)?(?:stools?|poos?|poops?|faeces|feces)|mela?ena|ha?ematemesis"
        r"|coffee[- ]ground\s+vomit|soak\w*\s+(?:through\s+)?(?:a\s+|one\s+|my\s+)?(?:pad|tampon)s?\s+(?:every"
        r"|an|each)\s+hour"
    ),
    "nonblanching": (
        r"non-?blanching|(?:rash|spots)\s+(?:that\s+|which\s+)?(?:doesn't|does\s+not|don't|do\s+not|won't|didn't"
        r"|did\s+not)\s+(?:fade|disappear|go\s+away|blanch)\s+(?:when|under|with)|purpur\w*|petechia\w*"
    ),
    "seizure_long": (
        r"(?:for|lasting|lasted|lasts|over|more\s+than|longer\s+than|at\s+least|almost|nearly|about|around)\s+"
        r"(?:(?:the|a|an)\s+)?(?:past\s+)?(?P<minutes>\d+|five|six|seven|eight|nine|ten|fifteen|twenty|thirty)"
        r"\s*(?:minutes?|mins?)|(?:won't|will\s+not|hasn't|has\s+not|isn't|doesn't|does\s+not|didn't|did\s+not)"
        r"\s+stop(?:ped|ping)?|still\s+(?:seizing|fitting|shaking|convulsing|jerking)"
    ),
    "swelling": (
        r"(?:throat|lips?|face|mouth|eyes?)\s+(?:is\s+|are\s+|has\s+|have\s+|started\s+|began\s+|feels?\s+|keeps\s+)?"
        rf"(?:swell\w*|swollen|puff\w*)|(?:swell\w*|swollen)\s+(?:of\s+|in\s+)?{_WHO}?\s*(?:throat|lips?|face|mouth)"
    ),
    "stiff_neck": (
        r"stiff\s+neck|neck\s+(?:is\s+|feels\s+)?(?:stiff\w*|rigid\w*)|nuchal\s+rigidity"
        r"|(?:can't|cannot|unable\s+to)\s+(?:bend|touch|put|move)\s+(?:(?:my|his|her|their)\s+)?(?:chin\s+to\s+"
        r"(?:my|his|her|their)\s+chest|neck|head\s+forward)"
    ),
    "abdominal": (
        r"(?:severe|excruciating|unbearable|intense|agoni[sz]ing|really\s+bad|very\s+bad)\s+(?:\w+\s+)?(?:lower\s+)?"
        r"(?:abdominal|stomach|tummy|belly|pelvic)\s+(?:pains?|cramps?|cramping)|(?:abdominal|stomach|tummy|belly"
        r"|pelvic)\s+(?:pains?|cramps?)\s+(?:is\s+|are\s+|that\s+is\s+)?(?:severe|excruciating|unbearable"
        r"|really\s+bad|so\s+bad)"
    ),
    "infant": rf"newborn|new-born|neonate|(?P<age>{_NUMBER})(?:[- ]|\s+)(?P<unit>day|week|month)s?(?:[- ]|\s+)old",
    "pregnant": r"pregnan\w*|\d{1,2}\s+weeks?\s+(?:pregnant|gestation)|trimester|expecting\s+(?:a\s+baby|twins)",
    "seizure": r"seizures?|seizing|fits|fitting|(?:having|had|has|in)\s+a\s+fit|convuls\w+",
    "fever": (
        r"fever\w*|febrile|pyrexi\w*|high\s+temp(?:erature)?|(?:has|had|have|having|running|with|got)\s+a\s+"
        r"temp(?:erature)?\b|temp(?:erature)?\s+(?:of\s+|is\s+|was\s+|at\s+|reading\s+|hit\s+|reached\s+|up\s+to\s+)?"
        r"(?:3[89]|4[0-2])(?:[.,]\d+)?|(?:3[89]|4[0-2])(?:[.,]\d+)?\s*(?:[°º]\s*c?|degrees?(?:\s+c\w*)?|c)"
        r"|10[0-5](?:[.,]\d+)?\s*(?:[°º]\s*f|degrees?\s+f\w*|f)"
    ),
    "fainted": r"faint(?:ed|ing)|passed\s+out|black(?:ed)?\s+out|collaps\w*",
    "allergen": (
        r"stung|sting|bee|wasp|hornet|peanuts?|nuts|shellfish|prawns?|shrimp|allerg\w*|hives|ate|eating|penicillin"
        r"|amoxicillin|after\s+(?:taking|the\s+(?:injection|antibiotic|jab))"
    ),
    "cardiac": (
        rf"sweat(?:y|ing|s)?|clammy|diaphore\w*|radiat\w*|(?:spread\w*|going|shoot\w*|moving|travel\w*)\s+(?:to|down"
        rf"|into|up)\s+{_WHO}\s+(?:left\s+|right\s+)?(?:arm|jaw|neck|back|shoulder)|(?:pain|ache|aching|numbness"
        rf"|tingling)\s+(?:in|down)\s+{_WHO}\s+(?:left\s+)?(?:arm|jaw)|(?:left\s+arm|jaw)\s+(?:pain|ache|hurts"
        r"|is\s+(?:numb|aching|sore|painful))|short(?:ness)?\s+of\s+breath|breathless|out\s+of\s+breath|nause\w*"
        r"|vomit\w*|light-?headed|dizz\w*"
    ),
}
# Every match of a term holds one of its needles, at most TERM_WINDOW[0] characters from its start; the term's pattern
# runs only in windows around them (text.scan.Needles).
NEEDLES: dict[str, tuple[str, ...]] = {
    "suicidal": ("suicid", "kill", "life", "lives", "end it all", "want", "dead", "no reason", "no point", "self",
                 "myself", "himself", "herself", "themsel"),
    "overdose": ("overdos", "took", "taken", "swallow", "pills", "tablets", "capsules"),
    "crushing_chest": ("chest",),
    "chest": ("chest",),
    "stroke": ("droop", "drop", "lopsided", "sagging", "fallen", "slurr", "garbled", "jumbled", "side", "left",
               "right"),
    "breathing": ("breath", "air", "gasp", "blue", "grey", "gray", "chok"),
    "anaphylaxis": ("anaphyla", "throat", "airway", "tongue", "epipen", "epi-pen", "adrenaline", "jext", "emerade"),
    "thunderclap": ("thunderclap", "headache"),
    "status": ("status", "back", "after", "between"),
    "bleeding": ("bleed", "blood", "tarry", "melena", "melaena", "haematemesis", "hematemesis", "coffee", "pad",
                 "tampon"),
    "nonblanching": ("blanch", "nonblanch", "rash", "spots", "purpur", "petechia"),
    "seizure_long": ("min", "stop", "still"),
    "swelling": ("swell", "swollen", "puff"),
    "stiff_neck": ("stiff", "neck", "rigid", "chin"),
    "abdominal": ("abdom", "stomach", "tummy", "belly", "pelvic"),
    "infant": ("newborn", "new-born", "neonate", "old"),
    "pregnant": ("pregnan", "gestation", "trimester", "expecting"),
    "seizure": ("seiz", "fit", "convuls"),
    "fever": ("fever", "febrile", "pyrexi", "temp", "°", "º", "degree", "38", "39", "40", "41", "42", "10"),
    "fainted": ("faint", "passed", "black", "collaps"),
    "allergen": ("sting", "stung", "bee", "wasp", "hornet", "nut", "peanut", "shellfish", "prawn", "shrimp", "allerg",
                 "hives", "ate", "eating", "penicillin", "amoxicillin", "after"),
    "cardiac": ("sweat", "clammy", "diaphore", "radiat", "arm", "jaw", "neck", "back", "shoulder", "breath", "nause",
                "vomit", "headed", "lightheaded", "dizz"),
}  # fmt: skip
TERM_WINDOW = (60, 100)  # characters before and after a needle that a term's match can reach
TERM_NEEDLES = {term: Needles({term: needles}) for term, needles in NEEDLES.items()}  # one pass per term looked for
# Matched on the folded request (lower case, one apostrophe): three times faster than ignoring case.
TERMS: dict[str, re.Pattern[str]] = {
    name: re.compile(rf"(?<!\w)(?:{pattern})(?!\w)") for name, pattern in _TERMS.items()
}
# A role and the terms that play it (each term plays itself): fainting counts with chest pain and in pregnancy.
ROLE_TERMS: dict[str, tuple[str, ...]] = {
    "cardiac": ("cardiac", "fainted"),
    "pregnancy_symptom": ("fainted", "abdominal"),
}
DIRECT: dict[str, str] = {  # term: the red flag it is on its own
    "suicidal": "suicidal",
    "overdose": "overdose",
    "crushing_chest": "chest_pain",
    "stroke": "stroke_signs",
    "breathing": "breathing_difficulty",
    "anaphylaxis": "anaphylaxis",
    "thunderclap": "thunderclap_headache",
    "status": "prolonged_seizure",
    "bleeding": "major_bleeding",
    "nonblanching": "meningitis_signs",
}
# (role, role, at most this many characters apart or None for anywhere in the request, red flag); the second
# role is looked for only when the first is found.
PAIRS: tuple[tuple[str, str, int | None, str], ...] = (
    ("chest", "cardiac", 200, "chest_pain"),
    ("swelling", "allergen", 200, "anaphylaxis"),
    ("seizure", "seizure_long", 150, "prolonged_seizure"),
    ("stiff_neck", "fever", 300, "meningitis_signs"),
    ("pregnant", "pregnancy_symptom", None, "pregnancy_emergency"),
    ("infant", "fever", 400, "infant_fever"),
)
# Which of the terms a red flag starts from (a direct one, or the first of a pair) can occur at all: most requests
# hold none. The second terms of pairs are looked for only near a first: NEAR_PREFILTER says which can occur
# there, in the region of the request within reach of the first (most first terms have no second beside them).
TERMS_PREFILTER = Prefilter({term: TERMS[term] for term in [*DIRECT, *(pair[0] for pair in PAIRS)]}, REQUEST_PREFILTERS)
NEAR_PREFILTER = Prefilter({term: TERMS[term] for pair in PAIRS for term in ROLE_TERMS.get(pair[1], (pair[1],))})
_WORD = r"[\w\x27\u2019]+(?:[-/][\w\x27\u2019]+)*"
_TERMINATOR = r"(?:but|however|although|though|yet|now|and|still|except|apart|aside|which|who|so|because|since)\b"
_NEGATION_CHARS = 60
NEGATED = _compile(
    r"(?:n't|\b(?:no|not|never|denies|denied|deny|denying|without|nor|none|negative\s+for|free\s+of|absence\s+of"
    r"|ruled\s+out|history\s+of|hx\s+of|h/o))\b"
    r"(?!\s+(?:know|sure|certain|think|tell|understand|remember|care|only|just|doubt|idea|matter|stop|better"
    rf"|improv\w*)\b)\s+(?:(?!{_TERMINATOR}){_WORD}\s+){{0,4}}$"
)
# The words NEGATED opens with (and "h" of "h/o"): without one of them (or "n't") before a term, NEGATED cannot
# match there, and one set lookup per word says so.
_NEGATION_WORDS = frozenset(
    ("no", "not", "never", "denies", "denied", "deny", "denying", "without", "nor", "none", "negative", "free",
     "absence", "ruled", "history", "hx", "h")
)  # fmt: skip
_LOWER_WORD = re.compile(r"[a-z]+")
_NUMBERS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_NUMBERS |= {"nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30}
_UNDER_3_MONTHS = {"day": 90, "week": 12, "month": 2}  # the most of each unit that is still under 3 months
_SEIZURE_MINUTES = 5

_CALL = r"(?:call|dial|phone|ring|text|contact)"
ESCALATION = re.compile(  # on the folded answer
    rf"(?<!\w)(?:{_CALL}\s+(?:\w+\s+){{0,2}}?(?:112|000|988|999|911|an?\s+ambulance|emergency|poison"
    r"|(?:a\s+|the\s+)?(?:crisis|suicide)|samaritans)|911|999|988|116\s*123|1-800-222-1222"
    r"|emergency\s+(?:services|department|room|care|number|help|treatment|medical|unit)|medical\s+emergency"
    r"|accident\s+(?:and|&)\s+emergency|ambulance|casualty"
    r"|(?:seek|get|obtain|need|requires?)\s+(?:\w+\s+)?(?:immediate|urgent|emergency|prompt)\s+(?:medical\s+)?"
    r"(?:attention|care|help|assessment|treatment|review|evaluation)"
    r"|(?:immediate|urgent|emergency)\s+medical\s+(?:attention|care|help|assessment|treatment|review|evaluation)"
    r"|(?:go|get|head)\s+(?:\w+\s+){0,2}?to\s+(?:the\s+|your\s+)?(?:nearest\s+)?(?:hospital|labou?r\s+ward"
    r"|maternity\s+(?:unit|triage|assessment))"
    r"|crisis\s+(?:line|team|service|text\s+line|helpline)|samaritans|(?:suicide|crisis)\s+(?:\w+\s+){0,2}?"
    r"(?:lifeline|hotline|helpline)|poisons?\s+(?:control|centre|center|information|helpline))(?!\w)"
)
ESCALATION_ACRONYM = re.compile(r"(?<![\w&])(?:A&E|ER|ED|EMS)(?![\w&])")  # on the answer as written
ESCALATION_NEEDLES = Needles({"escalation": (
    "911", "999", "988", "112", "000", "116", "1-800", "emergenc", "A&E", "ER", "ED", "EMS", "ambulance", "casualty",
    "immediate", "urgent", "prompt", "hospital", "labour", "labor", "maternity", "crisis", "samaritans", "suicide",
    "poison",
)})  # fmt: skip
ESCALATION_WINDOW = (60, 60)
ESCALATION_NEGATED = _compile(
    r"(?:n't|\b(?:not|never|no\s+need(?:\s+(?:to|for))?|without|unnecessary\s+to))\b"
    rf"(?!\s+(?:hesitate|wait|delay|drive|ignore|hang\s+up)\b)\s+(?:{_WORD}\s+){{0,4}}$"
)


class RedFlagCheck:
    """Check "red_flag_unescalated": one finding over the whole answer when the request holds a red flag and
    the answer no escalation; the detail names the most urgent red flag."""

    name: str = "red_flag_unescalated"

    def prepare(self, context: Context) -> None:
        context.once("red_flags", lambda request_text: red_flags(request_text, context))

    def __call__(self, text: str, context: Context) -> list[Finding]:
        flags = context.once("red_flags", lambda request_text: red_flags(request_text, context))
        if not flags or escalates(text):
            return []
        return [Finding(self.name, 0, len(text), {"red_flag": flags[0]})]


def red_flags(request_text: str, context: Context | None = None) -> list[str]:
    """The red flags (ids from RED_FLAGS, most urgent first) that ``request_text`` describes. ``context``: the
    exchange's, whose request this is: its folded text and prefilter pass (REQUEST_PREFILTERS) are shared with
    the other checks that read the request."""
    terms = _Terms(request_text, context)
    if terms.possible == set():
        return []  # no term can occur: most requests
    found = {flag for term, flag in DIRECT.items() if terms.could_be(term) and terms.role(term)}
    for first, second, window, flag in PAIRS:
        if flag in found or not (near := terms.role(first)):
            continue
        if _near(near, terms.role(second, None if window is None else (near, window)), window):
            found.add(flag)
    return [flag for flag in RED_FLAGS if flag in found]


def escalates(answer: str) -> bool:
    """Whether the answer sends the patient to emergency or crisis care (a negated mention does not count)."""
    folded = fold(answer)
    positions = ESCALATION_NEEDLES.find(answer, folded).get("escalation", [])
    for start, end in windows(positions, len(answer), ESCALATION_WINDOW):
        found = [*ESCALATION.finditer(folded, start, end), *ESCALATION_ACRONYM.finditer(answer, start, end)]
        if any(not ESCALATION_NEGATED.search(answer, max(0, m.start() - _NEGATION_CHARS), m.start()) for m in found):
            return True
    return False


class _Terms:
    """Where the request holds each term, unnegated; a term is looked for once, only when asked for, and only
    when the prefilter says it can occur."""

    def __init__(self, text: str, context: Context | None) -> None:
        self.text = text
        self.folded = fold(text) if context is None else context.folded
        # None: not ASCII, every term can occur
        self.possible = (
            TERMS_PREFILTER.possible(self.folded) if context is None else context.request_possible(TERMS_PREFILTER)
        )
        self.copy: bytes | None = None  # spaced(folded), made for the first term whose needles need it
        self.found: dict[str, list[int]] = {}

    def role(self, role: str, near: tuple[list[int], int] | None = None) -> list[int]:
        """Positions of the terms playing ``role``; with ``near`` (positions, window): only those at most
        ``window`` characters from one of ``positions``, and some more."""
        terms = ROLE_TERMS.get(role, (role,))
        if near is not None and (nearby := self._possible_near(*near)) is not None:
            terms = tuple(term for term in terms if term in nearby)
        return [position for term in terms for position in self.positions(term, near)]

    def _possible_near(self, others: list[int], window: int) -> set[str] | None:
        """The second terms NEAR_PREFILTER says can occur within ``window`` characters of one of ``others``
        (None: a region outside ASCII, any can). A match there starts at most ``window`` characters from one,
        and ends at most TERM_WINDOW[0] + TERM_WINDOW[1] characters after its start (it holds a needle at most
        the first past its start, and ends at most the second past that needle)."""
        possible: set[str] = set()
        reach = (window, window + TERM_WINDOW[0] + TERM_WINDOW[1])
        for start, end in windows(sorted(others), len(self.folded), reach):
            found = NEAR_PREFILTER.possible(self.folded[start:end])
            if found is None:
                return None
            possible |= found
        return possible

    def could_be(self, term: str) -> bool:
        """False when the prefilter rules ``term`` out."""
        return self.possible is None or term not in TERMS_PREFILTER.patterns or term in self.possible

    def positions(self, term: str, near: tuple[list[int], int] | None = None) -> list[int]:
        if not self.could_be(term):
            return []
        found = self.found.get(term)
        if found is not None:
            return found
        if self.copy is None and TERM_NEEDLES[term].reads_copy:
            self.copy = spaced(self.folded)
        needles = TERM_NEEDLES[term].find(self.text, self.folded, self.copy).get(term, [])
        if near is None:
            found = self.found[term] = list(self._find(term, needles))
            return found
        # A match within the window of a position holds a needle at most TERM_WINDOW[0] characters past its start.
        others, window = near
        needles = [n for n in needles if any(a - window <= n <= a + window + TERM_WINDOW[0] for a in others)]
        return list(self._find(term, needles))

    def _find(self, term: str, needles: list[int]) -> Iterator[int]:
        text, pattern = self.text, TERMS[term]
        for start, end in windows(needles, len(text), TERM_WINDOW):
            for m in pattern.finditer(self.folded, start, end):
                if _counts(term, m) and not self._negated(m.start()):
                    yield m.start()

    def _negated(self, position: int) -> bool:
        """Whether a negation just before ``position`` ("no", "denies", "without", "history of") undoes the term."""
        start = max(0, position - _NEGATION_CHARS)
        before = self.folded[start:position]
        if "n't" not in before and _NEGATION_WORDS.isdisjoint(_LOWER_WORD.findall(before)):
            return False
        return NEGATED.search(self.text, start, position) is not None


def _counts(term: str, m: re.Match[str]) -> bool:
    """A seizure duration of 5 minutes or more; an age under 3 months; every other term as found."""
    if term == "seizure_long" and m.group("minutes"):
        return _number(m.group("minutes")) >= _SEIZURE_MINUTES
    if term == "infant" and m.group("age"):
        return _number(m.group("age")) <= _UNDER_3_MONTHS[m.group("unit").lower()]
    return True


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS.get(word.lower(), 0)


def _near(first: list[int], second: list[int], window: int | None) -> bool:
    return bool(first and second) and (window is None or any(abs(a - b) <= window for a in first for b in second))
