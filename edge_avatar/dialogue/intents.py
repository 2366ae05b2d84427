"""Rules that run before retrieval: emergencies, small talk and politeness, names, and other languages.

Why this module exists: some turns must never depend on a similarity score.
"My chest hurts" must always send the visitor to staff, whatever the
knowledge file says; "thanks", "hello" and "say that again" are not
questions about the site; "my name is Sam" is something to remember; and a
visitor speaking Spanish should be told, in a sentence, how to get an
interpreter rather than get a wrong answer. Plain regular expressions and
word lists: they are predictable, testable and take microseconds.

Language detection is a deliberately small heuristic (script + frequent
function words of the languages most often heard at a European reception);
the answer engine only speaks English (MiniLM all-MiniLM-L6-v2 is an
English model).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Always answered by directing the visitor to staff. Matched on word boundaries, lower case.
EMERGENCY_PHRASES = (
    "emergency", "heart attack", "cant breathe", "can not breathe", "cannot breathe", "not breathing",
    "struggling to breathe", "chest pain", "chest hurts", "pain in my chest", "collapsed", "collapse", "fainted",
    "feel faint", "feeling faint", "passed out", "unconscious", "stroke", "bleeding", "overdose", "seizure",
    "fitting", "choking", "suicide", "kill myself", "hurt myself", "severe pain", "allergic reaction",
    "anaphylaxis", "call an ambulance", "call a doctor", "need a doctor now", "dying",
)
_NOT_EMERGENCY = re.compile(r"\b(not|no|isnt|isn t) (an |a )?(emergency|urgent)\b")

_SMALLTALK_PATTERNS: dict[str, re.Pattern[str]] = {
    "greeting": re.compile(r"^(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening|day)|greetings)"
                           r"( there| again| everyone)?$"),
    "how_are_you": re.compile(r"^((hi|hello|hey) )?(how are you( doing| today)?|how s it going|how are things"
                              r"|how do you do|you ok|are you ok(ay)?|how have you been)$"),
    "thanks": re.compile(r"^((ok(ay)?|great|perfect|lovely|brilliant|wonderful|that s (great|helpful|perfect))"
                         r" )*(thank you( (so|very) much)?|thanks( (a lot|so much))?|cheers|ta|much appreciated"
                         r"|that s (very )?(helpful|kind))( (so|very) much)?$"),
    "goodbye": re.compile(r"^((ok(ay)?|thanks|thank you|right) )*(bye|goodbye|good bye|bye bye|see you( later)?"
                          r"|have a (good|nice) day|that s all|that is all|nothing else|i m done|i have to go)$"),
    "who_are_you": re.compile(r"^(who are you|what s your name|what is your name|who am i (talking|speaking) to"
                              r"|are you (a )?(robot|human|real|person|computer|ai)|what are you)$"),
    "capabilities": re.compile(r"^(what can you do|what can you help( me)?( with)?|how can you help( me)?"
                               r"|what do you know( about)?|what can i ask( you)?|what are you for"
                               r"|can you help me|i need (some )?help|help)$"),
    "repeat": re.compile(r"^(say (that|it) again|repeat( that| please)?|can you repeat( that)?|pardon( me)?"
                         r"|sorry what|what did you say|come again|i didn t (catch|hear) (that|you)"
                         r"|could you repeat( that)?)$"),
    "affirm": re.compile(r"^(yes|yeah|yep|yup|sure|correct|right|exactly|that s right|that s it|please do"
                         r"|yes please)$"),
    "deny": re.compile(r"^(no|nope|not really|no thanks|no thank you|wrong|that s wrong|not that)$"),
    "acknowledge": re.compile(r"^(ok|okay|alright|all right|great|perfect|fine|got it|i see|understood|cool"
                              r"|lovely|brilliant)$"),
}
_LEADING_POLITENESS = re.compile(
    r"^((hi|hello|hey|good (morning|afternoon|evening)|excuse me|sorry|pardon me|please|um+|uh+|er+|erm|so|ok(ay)?"
    r"|well)( there)?[ ,]+)+")
_NAME_INTRO = re.compile(r"\b(?:my name is|my name s|i am called|i m called|call me|the name is|name s)\s+"
                         r"([A-Za-z][A-Za-z'\-]{1,30})", re.IGNORECASE)
_NOT_NAMES = frozenset({"not", "looking", "here", "a", "an", "the", "just", "very", "so", "in", "at", "from"})


def normalise(text: str) -> str:
    """Lower case, apostrophes and punctuation to spaces, accents kept, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def is_emergency(text: str, extra_phrases: tuple[str, ...] = ()) -> bool:
    norm = normalise(text).replace("can t ", "cant ").replace("isn t", "isnt")
    if _NOT_EMERGENCY.search(norm):
        return False
    padded = f" {norm} "
    return any(f" {normalise(p)} " in padded for p in (*EMERGENCY_PHRASES, *extra_phrases))


def strip_politeness(text: str) -> str:
    """'Hi, excuse me, where is X' -> 'where is X' (normalised)."""
    return _LEADING_POLITENESS.sub("", normalise(text)).strip()


def had_greeting(text: str) -> bool:
    return bool(re.match(r"^(hi|hello|hey|hiya|good (morning|afternoon|evening))\b", normalise(text)))


def smalltalk_intent(text: str) -> str | None:
    """The small-talk intent of the whole utterance, or None when it is (or contains) a real question."""
    norm = normalise(text)
    if not norm:
        return None
    for candidate in (norm, strip_politeness(text)):
        for intent, pattern in _SMALLTALK_PATTERNS.items():
            if pattern.match(candidate):
                return intent
    return None


def extract_name(text: str) -> str | None:
    match = _NAME_INTRO.search(text.replace("\u2019", "'").replace("'", " "))
    if not match:
        return None
    name = match.group(1).strip("'-")
    if name.lower() in _NOT_NAMES:
        return None
    return name[:1].upper() + name[1:]


def remove_name_intro(text: str) -> str:
    """'My name is Sam and I'm looking for radiology' -> 'and I'm looking for radiology'."""
    return _NAME_INTRO.sub(" ", text.replace("\u2019", "'").replace("'", " ")).strip(" ,.;")


# ---------------------------------------------------------------------------- language

_ENGLISH_WORDS = frozenset("""
the is are where what when how who which can could would i you my your me we a an to of for in on at and or with
this that it do does did have has get there here please thank thanks need want looking find help hello hi
""".split())
_FOREIGN_WORDS = frozenset("""
dónde donde está esta el los las del por favor necesito quiero cómo qué hay una para con baño gracias hola señor
où est le les je suis des une pour avec vous plaît bonjour merci madame monsieur toilettes
wo ist der das und ich nicht bitte danke ein eine mit für zum zur guten tag hallo krankenhaus
dove il della sono grazie buongiorno ciao ospedale
onde fica obrigado obrigada não você olá
gdzie jest nie dziękuję proszę dzień dobry szpital
waar het een ik bedankt alstublieft
nerede nerde hastane teşekkür
""".split())


@dataclass(frozen=True)
class LanguageGuess:
    english: bool
    reason: str


def guess_language(text: str) -> LanguageGuess:
    """Is this English? A script check, then frequent function words of English vs. other languages."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return LanguageGuess(True, "no letters")
    non_latin = sum(1 for c in letters if not unicodedata.name(c, "").startswith("LATIN"))
    if non_latin / len(letters) > 0.3:
        return LanguageGuess(False, "non-Latin script")
    words = normalise(text).split()
    english = sum(1 for w in words if w in _ENGLISH_WORDS)
    foreign = sum(1 for w in words if w in _FOREIGN_WORDS)
    accented = any(unicodedata.decomposition(c) for c in letters)
    if foreign >= 2 and foreign > english:
        return LanguageGuess(False, f"{foreign} non-English function words")
    if foreign >= 1 and english == 0 and (accented or len(words) <= 4):
        return LanguageGuess(False, "a non-English function word and no English ones")
    return LanguageGuess(True, "English function words" if english else "no evidence against English")

