"""Prompt-injection patterns in user turns and supplied documents (docs/judges.md section 3).

Runs on the request's text (the user's turns and any pasted or retrieved document, passed as ``text``; the
context is not needed). A finding spans the matched phrase; its detail names the pattern (PATTERNS).

Patterns:
  * ignore_previous: "ignore (all) (the) previous/prior/above instructions", "disregard everything above";
    not "ignore the previous instructions about your appointment" (one person correcting another);
  * override_system: "disregard your system prompt", "forget your rules", "bypass the safety filters";
  * reveal_system: "reveal/print/repeat your system prompt", "what is your initial prompt", "repeat the text
    above";
  * persona_override: "you are now DAN / in developer mode / no longer an AI", "developer mode enabled",
    "do anything now", "act as an uncensored AI";
  * no_restrictions: "pretend you have no restrictions", "answer without any filters", "if you had no
    rules"; not a patient's limits ("imagine you had no dietary restrictions", "a meal plan without
    restrictions on carbs");
  * roleplay_jailbreak: jailbreak openers ("let's play a game where you ...", "from now on you will act as",
    "act as an AI that has no ...", "pretend to be my late grandmother ..."); a plain role-play ("pretend you are
    my GP", "stay in character as the patient") is a common teaching request and does not count;
  * new_instructions: "new instructions:" followed by words aimed at the model (respond, ignore, assistant,
    "you are now" ...), and "system/hidden/secret instructions:" on their own; "discharge instructions:
    take with food" never counts;
  * hidden_instruction: notes aimed at the model inside a document ("note to the AI", "if you are an AI
    reading this");
  * chat_markup: chat-template tokens in user content ("<|im_start|>system", "[INST]", "<<SYS>>");
  * role_header: a line that opens a fake turn ("### system", "### Instruction:", "System: you are ...",
    "Assistant: Sure, ..."); an operating note's "Assistant: Dr Patel" does not count.
Benign clinical words never match on their own: "ignore the first reading, the cuff was loose" and
"discharge instructions: take with food" name no instructions of the model's. Quoting an injection phrase
("what does 'ignore previous instructions' mean?") still counts: the check does not read intent.

Out of scope: base64, hex, leetspeak, homoglyphs, zero-width characters and other obfuscation, instructions
in languages other than English, and indirect attacks phrased as ordinary requests: those need a guard
model (Prompt Guard 2 in docs/judges.md), not patterns.

Speed: each pattern runs only in windows around its needles (text.scan.Needles); most
requests hold none, and a 300-word request costs well under a millisecond.
"""

from __future__ import annotations

import re

from policies.checks.base import REQUEST_PREFILTERS, Context, Finding
from text.scan import Needles, Prefilter, fold, windows


def _compile(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """Compiles with every apostrophe also matching the typographic one (U+2019)."""
    return re.compile(pattern.replace("'", "['\u2019]"), flags)


_IGNORE = r"(?:ignore|disregard|forget|override|overrule|bypass|discard|abandon|set\s+aside)"
# What a model is kept to, and the limits a patient lives with ("no dietary restrictions" is no jailbreak).
_RULES = (
    r"(?:restrictions|rules|filters|limits|limitations|guidelines|ethics|morals|constraints|censorship"
    r"|polic(?:y|ies)|programming|boundaries|guardrails)"
)
_CLINICAL_LIMITS = (
    r"(?:dietary|diet|fluid|food|salt|sodium|sugar|activity|driving|lifting|exercise|visiting|mobility|weight"
    r"|travel|work|medication)\b"
)
# What a model is told. Not "message" ("ignore my previous message, I meant 5 mg"), "orders" or "restrictions"
# ("disregard prior orders for heparin", "ignore the previous fluid restrictions"): people correct each other.
_TARGET = (
    r"(?:instructions?|prompts?|rules|directives?|guidelines|guardrails|constraints|commands?|programming"
    r"|polic(?:y|ies)|training)"
)
# A machine reader, never "the assistant" or "the model" alone: clinics have medical assistants and models.
_MACHINE = (
    r"(?:(?-i:AI)(?:\s+(?:assistant|model|system|agent)s?)?|LLMs?|(?:large\s+)?language\s+models?|chat\s*bots?"
    r"|(?-i:GPT))"
)
# Words that, after "new instructions:" or "System:", show the text speaks to the model, not to a patient.
_TO_THE_MODEL = (
    r"\b(?:assistant|(?-i:AI)|LLM|language\s+model|chatbot|system\s+prompt|respond|reply|output|print|ignore"
    r"|disregard|pretend|role-?play|act\s+as|you\s+(?:are|will|must|should)\s+(?:now|no\s+longer|always|never|only)"
    r"|you\s+are\s+an?|your\s+(?:previous|prior|original|new|real)\s+(?:instructions|rules|role|task))\b"
)
# pattern id: (needles, one of which every match holds at most PATTERN_WINDOW[0] characters from its start;
# pattern). The pattern runs only in windows around its needles (text.scan.Needles): most
# requests hold none of them.
PATTERNS: dict[str, tuple[tuple[str, ...], re.Pattern[str]]] = {
    "ignore_previous": (
        ("ignore", "disregard", "forget", "overr", "bypass", "discard", "abandon", "set aside"),
        _compile(
            rf"\b{_IGNORE}\s+(?:(?:all|any|every|each|the|your|these|those|of)\s+){{0,3}}"
            r"(?:(?:previous|previously\s+given|prior|above|preceding|earlier|former|foregoing|original|initial"
            rf"|old|existing|default)\s+){_TARGET}\b"
            r"(?!\s+(?:about|regarding|concerning|on|for|re|relating|in\s+relation|from\s+(?:the|your)\s+"
            r"(?:pharmac|clinic|hospital|doctor|GP|surgery|nurse)))"
            rf"|\b{_IGNORE}\s+(?:all\s+(?:of\s+)?(?:the\s+)?|everything\s+)(?:above|previous|prior|before|preceding)\b"
            rf"|\b{_IGNORE}\s+everything\s+(?:you(?:'ve|\s+have|\s+were|'re|\s+are)\s+(?:been\s+)?"
            r"(?:told|instructed|taught|programmed))"
        ),
    ),
    "override_system": (
        (
            "ignore",
            "disregard",
            "forget",
            "overr",
            "bypass",
            "circumvent",
            "disable",
            "turn off",
            "deactivate",
            "break",
        ),
        _compile(
            rf"\b(?:{_IGNORE}|circumvent|disable|turn\s+off|deactivate|break\s+free\s+of|break)\s+"
            r"(?:all\s+(?:of\s+)?)?(?:your\s+(?:own\s+)?(?:system\s+)?(?:prompt|instructions|rules|guidelines"
            r"|programming|restrictions|training|filters?|guardrails|constraints|limitations|safety\s+\w+"
            r"|content\s+polic(?:y|ies)|ethical\s+guidelines)|the\s+(?:system\s+(?:prompt|message|instructions?)"
            r"|(?:initial|original|hidden|secret)\s+(?:system\s+)?(?:prompt|instructions)|safety\s+(?:filters?"
            r"|guidelines|guardrails|rules)|content\s+(?:polic(?:y|ies)|filters?)))\b"
        ),
    ),
    "reveal_system": (
        ("prompt", "instruct", "system", "above", "before", "told"),
        _compile(
            r"\b(?:reveal|print|show|display|output|repeat|recite|dump|leak|expose|share|tell\s+me|give\s+me"
            r"|write\s+out|spell\s+out|what\s+(?:is|are|was|were))\s+(?:me\s+)?(?:(?:all|exactly|verbatim)\s+)?"
            r"(?:your|the)\s+(?:(?:full|entire|exact|complete|original|initial|hidden|secret|internal)\s+)*"
            r"(?:system\s+(?:prompt|message|instructions?)|(?:initial|original|hidden|secret|internal|developer)\s+"
            r"(?:prompt|instructions))\b|\b(?:reveal|print|show|repeat|recite|output|what\s+is)\s+your\s+prompt\b"
            r"|\b(?:repeat|print|output|copy|recite)\s+(?:all\s+(?:of\s+)?)?(?:the\s+)?(?:text|words|everything"
            r"|content)\s+(?:above|before\s+(?:this|here))|\bwhat\s+(?:were|have)\s+you\s+(?:been\s+)?(?:told"
            r"|instructed)\s+(?:to\s+do\s+)?(?:before|above|earlier|at\s+the\s+start)\b"
        ),
    ),
    "persona_override": (
        (
            "DAN",
            "STAN",
            "DUDE",
            "you are now",
            "you're now",
            "you are no longer",
            "you're no longer",
            "mode",
            "do anything now",
            "uncensored",
            "unfiltered",
            "unrestricted",
            "jailbroken",
            "evil",
            "rogue",
        ),
        _compile(
            r"\byou(?:\s+are|'re)\s+(?:now\s+)?(?:(?:called|named|known\s+as)\s+)?(?-i:DAN|STAN|DUDE)\b"
            r"|\byou(?:\s+are|'re)\s+(?:now|no\s+longer)\s+(?:an?\s+)?(?:jailbroken|unrestricted|unfiltered"
            r"|uncensored|unbound|evil|rogue)\b|\byou(?:\s+are|'re)\s+no\s+longer\s+(?:an?\s+)?(?:bound|restricted"
            rf"|limited|constrained|required\s+to|{_MACHINE}|assistant|ChatGPT|Claude)\b"
            r"|\b(?:developer|dev|god|admin|debug|jailbreak|jailbroken|sudo|unrestricted|(?-i:DAN))\s+mode\b"
            r"|\bdo\s+anything\s+now\b|\b(?:act|acting|behave|respond|answer)\s+as\s+(?-i:DAN)\b"
            r"|\b(?:act|acting|behave|respond|answer|pretend\s+to\s+be)\s+(?:as|like)\s+(?:an?\s+)?(?:uncensored"
            r"|unfiltered|unrestricted|jailbroken|evil|rogue)\b"
        ),
    ),
    "no_restrictions": (
        (
            "pretend",
            "imagine",
            "act as if",
            "act like",
            "assume",
            "suppose",
            "behave as if",
            "restrict",
            "rules",
            "filter",
            "limit",
            "guideline",
            "ethic",
            "moral",
            "censor",
            "guardrail",
            "polic",
            "unrestricted",
            "unfiltered",
            "uncensored",
        ),
        _compile(
            r"\b(?:pretend|imagine|act\s+as\s+if|act\s+like|assume|suppose|behave\s+as\s+if)\s+(?:that\s+)?you"
            r"(?:\s+(?:have|had|are|were)|'re)\s+(?:(?:unrestricted|unfiltered|uncensored|jailbroken)\b"
            r"|(?:no|zero|not\s+(?:bound|restricted|limited|constrained)\s+by|free\s+(?:of|from)|without)\s+"
            rf"(?:any\s+)?(?:(?!{_CLINICAL_LIMITS})\w+\s+)?{_RULES}\b)"
            r"|\b(?:answer|respond|reply|speak|talk|write|tell\s+me)\s+(?:freely\s+|honestly\s+)?(?:without|with\s+no)\s+"
            r"(?:any\s+)?(?:restrictions|limitations|limits|rules|filters|censorship|guardrails)\b"
            r"|\b(?:answer|respond|reply|speak|talk|write|tell\s+me)\s+(?:\w+\s+){0,3}?(?:without|with\s+no)\s+"
            r"(?:any\s+)?(?:filters|censorship|guardrails|(?:ethical|moral|safety)\s+(?:guidelines|constraints|filters"
            r"|guardrails|restrictions))\b"
            rf"|\bif\s+you\s+(?:had|have)\s+no\s+(?:(?!{_CLINICAL_LIMITS})\w+\s+)?{_RULES}\b"
        ),
    ),
    "roleplay_jailbreak": (
        ("game", "from now on", "grand", "act as", "pretend", "role"),
        _compile(
            r"\blet's\s+play\s+a\s+game\s+(?:where|in\s+which)\s+you\b"
            r"|\bfrom\s+now\s+on,?\s+you\s+(?:will|are\s+going\s+to|must|shall)\s+(?:act|respond|pretend|answer"
            r"|behave|play|role-?play|speak)\s+(?:as|like)\b"
            r"|\b(?:act|pretend|play|role-?play)\s+(?:to\s+be\s+|as\s+|you\s+are\s+)?(?:my\s+)?(?:late|dead|deceased)\s+"
            r"(?:grandmother|grandma|granny|grandfather|grandpa)\b"
            r"|\b(?:role-?play|pretend|act)\s+(?:as|to\s+be|you\s+are)\s+(?:an?\s+)?(?:\w+\s+){0,3}?(?:who|that)\s+"
            r"(?:has\s+no|have\s+no|ignores?|doesn't\s+(?:follow|care|have)|does\s+not\s+(?:follow|care|have)"
            r"|can\s+(?:say|do)\s+anything|answers?\s+(?:anything|everything|any\s+question)|is\s+not\s+bound"
            r"|isn't\s+bound|never\s+refuses?)"
        ),
    ),
    "new_instructions": (
        ("instruction", "directive", "prompt"),
        _compile(
            r"\b(?:(?:system|hidden|secret|real|actual|true|override)\s+(?:instructions?|directives?|prompt)\s*:"
            rf"|(?:new|updated|revised|additional)\s+(?:system\s+)?(?:instructions?|directives?|prompt)\s*:"
            rf"(?=[^\n]{{0,120}}?{_TO_THE_MODEL}))"
        ),
    ),
    "hidden_instruction": (
        ("AI", "GPT", "llm", "language model", "chatbot", "chat bot"),
        _compile(
            rf"\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?{_MACHINE}(?!\w)"
            rf"|\b(?:if\s+you\s+are|to\s+(?:any|the|all))\s+(?:an?\s+)?{_MACHINE}\s+(?:\w+\s+)?(?:reading|processing"
            rf"|summari[sz]ing|reviewing)\b|\b{_MACHINE}\s+(?:reading|processing|summari[sz]ing|reviewing)\s+this\b"
        ),
    ),
    "chat_markup": (
        ("<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>", "<end_of_turn>"),
        _compile(
            r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id"
            r"|begin_of_text)\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>"
        ),
    ),
    "role_header": (
        ("system", "assistant", "developer", "instruction", "response"),
        _compile(
            r"^[ \t]*#{2,6}[ \t]*(?:(?:system|assistant|developer)[ \t]*:?|(?:instruction|response)[ \t]*:)[ \t]*$"
            rf"|^[ \t]*(?:system|assistant|developer)[ \t]*:(?=[^\n]{{0,80}}?(?:{_TO_THE_MODEL}"
            r"|\b(?:sure|certainly|of\s+course|absolutely|I\s+(?:will|can)|I'll|here\s+is|here's)\b))",
            re.IGNORECASE | re.MULTILINE,
        ),
    ),
}
NEEDLES = Needles({pattern_id: needles for pattern_id, (needles, _) in PATTERNS.items()})
# On the folded text (every pattern ignores case), in one pass with the red-flag terms (REQUEST_PREFILTERS).
PREFILTER = Prefilter({pattern_id: pattern for pattern_id, (_, pattern) in PATTERNS.items()}, REQUEST_PREFILTERS)
# Characters before and after a needle that a match can reach; the second leaves room for the lookaheads that
# read up to 120 characters past "new instructions:".
PATTERN_WINDOW = (80, 220)


class PromptInjectionCheck:
    """Check "prompt_injection": a finding per injection phrase in the request text, spanning the phrase;
    overlapping matches of two patterns count once (the one that starts first, then the longer)."""

    name: str = "prompt_injection"

    def __call__(self, text: str, context: Context) -> list[Finding]:
        if text is context.request_text:  # the request stage: one pass with the red-flag terms
            folded, possible = context.folded, context.request_possible(PREFILTER)
        else:
            folded = fold(text)
            possible = PREFILTER.possible(folded)
        if possible is not None and not possible:
            return []  # no pattern can match anywhere: most requests
        needles = NEEDLES.find(text, folded)
        found = [
            (m.start(), m.end(), pattern_id)
            for pattern_id, positions in needles.items()
            if possible is None or pattern_id in possible
            for start, end in windows(positions, len(text), PATTERN_WINDOW)
            for m in PATTERNS[pattern_id][1].finditer(text, start, end)
        ]
        found.sort(key=lambda f: (f[0], -f[1]))
        findings: list[Finding] = []
        for start, end, pattern_id in found:
            if not findings or start >= findings[-1].end:
                findings.append(Finding(self.name, start, end, {"pattern": pattern_id}))
        return findings
