"""Phonemes to visemes: the 14 mouth classes the planner reads and the ARKit shapes the teacher draws.

Why this module exists: lip sync starts from the TTS phoneme timeline, but
the face cannot show 40-odd phonemes -- many look alike on the lips (p, b, m
all close them; t, d, n, l differ only inside the mouth). The usual answer
in animation and in lip-reading research is a small set of *visemes*; ours
follows the common 14/15-class sets used by game and avatar lip-sync
(silence, bilabial, labiodental, dental, alveolar, velar, postalveolar,
sibilant, r, and five vowel classes). Both the input vector (viseme
occupancy, ``inputs``) and the reference engine (viseme -> shape,
``teacher``) use this one table, so they cannot disagree.

Both alphabets the speech engines emit are handled: espeak-ng's ASCII
mnemonics (``tS``, ``aI``, ``@``, ``oU``...) and IPA (Piper). Diphthongs map to
two classes (``aI`` -> open then spread) so the mouth travels within the
vowel. Unknown symbols fall back by shape: a vowel-looking symbol is a mid
vowel, anything else an alveolar consonant (the least visible choice).

Pure Python, no dependency beyond numpy: it runs per phoneme, not per pixel.
"""

from __future__ import annotations

import numpy as np

from edge_avatar.motion import BLENDSHAPE_INDEX

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "KK", "CH", "SS", "RR", "AA", "E", "IH", "OH", "OU")
VISEME_INDEX = {name: i for i, name in enumerate(VISEMES)}
N_VISEMES = len(VISEMES)
SIL, PP = VISEME_INDEX["sil"], VISEME_INDEX["PP"]
VOWEL_VISEMES = frozenset(VISEME_INDEX[v] for v in ("AA", "E", "IH", "OH", "OU"))

# espeak-ng mnemonics, longest first (so "tS" wins over "t"), then IPA. Values: one or two viseme names.
_SYMBOLS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(sorted({
    # --- espeak-ng (Kirshenbaum-like) consonants
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "T": ("TH",), "D": ("TH",),
    "t": ("DD",), "d": ("DD",), "n": ("DD",), "l": ("DD",),
    "k": ("KK",), "g": ("KK",), "N": ("KK",), "h": ("KK",), "x": ("KK",), "?": ("KK",),
    "tS": ("CH",), "dZ": ("CH",), "S": ("CH",), "Z": ("CH",), "j": ("CH",), "C": ("CH",),
    "s": ("SS",), "z": ("SS",),
    "r": ("RR",), "R": ("RR",), "w": ("OU",), "W": ("OU",),
    # --- espeak-ng vowels
    "a": ("AA",), "A": ("AA",), "aa": ("AA",), "A:": ("AA",), "V": ("AA",), "A@": ("AA",), "a#": ("E",),
    "aI": ("AA", "IH"), "aU": ("AA", "OU"),
    "e": ("E",), "E": ("E",), "@": ("E",), "3": ("E",), "3:": ("E",), "e@": ("E",), "eI": ("E", "IH"),
    "i": ("IH",), "I": ("IH",), "i:": ("IH",), "i@": ("IH", "E"), "I#": ("IH",), "I2": ("IH",),
    "o": ("OH",), "O": ("OH",), "O:": ("OH",), "0": ("OH",), "o@": ("OH",), "O@": ("OH",),
    "oU": ("OH", "OU"), "OI": ("OH", "IH"),
    "u": ("OU",), "U": ("OU",), "u:": ("OU",), "U@": ("OU", "E"),
    # --- IPA (Piper)
    "θ": ("TH",), "ð": ("TH",), "ɾ": ("DD",), "ɫ": ("DD",), "ŋ": ("KK",), "ʔ": ("KK",), "ɡ": ("KK",),
    "tʃ": ("CH",), "dʒ": ("CH",), "ʃ": ("CH",), "ʒ": ("CH",), "ɹ": ("RR",), "ɻ": ("RR",), "ʍ": ("OU",),
    "æ": ("AA",), "ɑ": ("AA",), "ʌ": ("AA",), "ɐ": ("E",), "aɪ": ("AA", "IH"), "aʊ": ("AA", "OU"),
    "ɛ": ("E",), "ə": ("E",), "ɚ": ("E",), "ɜ": ("E",), "ɝ": ("E",), "eɪ": ("E", "IH"),
    "ɪ": ("IH",), "ᵻ": ("IH",), "ɔ": ("OH",), "ɒ": ("OH",), "oʊ": ("OH", "OU"), "ɔɪ": ("OH", "IH"),
    "ʊ": ("OU",), "ɵ": ("OU",),
}.items(), key=lambda kv: -len(kv[0])))
_VOWEL_START = frozenset("aAeEiIoOuUV03@æɑʌɐɛəɚɜɝɪᵻɔɒʊɵ")
_STRIP = str.maketrans("", "", "ˈˌːˑ'\",;%=#/-12345")


def phoneme_visemes(symbol: str) -> tuple[int, ...]:
    """Viseme indices for one phoneme symbol (two for a diphthong); ``_`` or empty -> silence."""
    if not symbol or symbol.startswith("_"):
        return (SIL,)
    for candidate in (symbol, symbol.translate(_STRIP)):
        if not candidate:
            continue
        for key, names in _SYMBOLS:
            if candidate.startswith(key) and (len(candidate) == len(key) or len(key) >= 2 or
                                              not candidate[len(key)].isalpha()):
                return tuple(VISEME_INDEX[n] for n in names)
    return (VISEME_INDEX["E"],) if symbol[:1] in _VOWEL_START else (VISEME_INDEX["DD"],)


def is_bilabial_symbol(symbol: str) -> bool:
    """The phoneme closes the lips (p, b, m in either alphabet)."""
    return phoneme_visemes(symbol) == (PP,)


# ---------------------------------------------------------------------------------------------- shapes

# The mouth and jaw channels lip sync writes (everything else belongs to expression and gaze).
MOUTH_CHANNELS: tuple[str, ...] = (
    "jawOpen", "jawForward", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthStretchLeft", "mouthStretchRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthSmileLeft", "mouthSmileRight", "tongueOut",
)
MOUTH_INDEX = np.array([BLENDSHAPE_INDEX[n] for n in MOUTH_CHANNELS], dtype=np.int64)
_M = {name: i for i, name in enumerate(MOUTH_CHANNELS)}


def _shape(**weights: float) -> np.ndarray:
    out = np.zeros(len(MOUTH_CHANNELS), dtype=np.float32)
    for stem, value in weights.items():
        if stem in _M:
            out[_M[stem]] = value
        else:  # a symmetric pair given by its stem
            out[_M[stem + "Left"]] = out[_M[stem + "Right"]] = value
    return out


# Target shape of each viseme at full articulation (ARKit units, 0..1). Designed here by looking at
# the mouth in each class -- open vowels drop the jaw, rounded ones pucker and funnel, bilabials press
# the lips together with the jaw nearly closed (mouthClose == jawOpen: the lips meet), f/v roll the
# lower lip in under the upper teeth, s/z spread the lips over closed teeth.
VISEME_SHAPES = np.stack([
    _shape(jawOpen=0.03, mouthClose=0.03),                                                      # sil
    _shape(jawOpen=0.05, mouthClose=0.05, mouthPress=0.6, mouthRollLower=0.15, mouthRollUpper=0.1),  # PP
    _shape(jawOpen=0.1, mouthClose=0.04, mouthRollLower=0.55, mouthUpperUp=0.22, mouthShrugUpper=0.1),  # FF
    _shape(jawOpen=0.17, tongueOut=0.35, mouthUpperUp=0.1, mouthLowerDown=0.1),                 # TH
    _shape(jawOpen=0.2, mouthLowerDown=0.12, mouthStretch=0.1, mouthUpperUp=0.06),              # DD
    _shape(jawOpen=0.27, mouthLowerDown=0.1, mouthStretch=0.12),                                # KK
    _shape(jawOpen=0.14, mouthFunnel=0.45, mouthPucker=0.25, mouthUpperUp=0.15, mouthLowerDown=0.15,
           jawForward=0.1),                                                                     # CH
    _shape(jawOpen=0.08, mouthStretch=0.3, mouthSmile=0.12, mouthUpperUp=0.08, mouthLowerDown=0.12),  # SS
    _shape(jawOpen=0.17, mouthFunnel=0.3, mouthPucker=0.3),                                     # RR
    _shape(jawOpen=0.62, mouthLowerDown=0.3, mouthUpperUp=0.1, mouthStretch=0.08),              # AA
    _shape(jawOpen=0.38, mouthStretch=0.22, mouthLowerDown=0.2, mouthUpperUp=0.1, mouthSmile=0.06),  # E
    _shape(jawOpen=0.22, mouthStretch=0.35, mouthSmile=0.16, mouthUpperUp=0.12, mouthLowerDown=0.12),  # IH
    _shape(jawOpen=0.45, mouthFunnel=0.5, mouthPucker=0.2, mouthLowerDown=0.1),                 # OH
    _shape(jawOpen=0.2, mouthPucker=0.7, mouthFunnel=0.3),                                      # OU
])  # (N_VISEMES, len(MOUTH_CHANNELS))

# How strongly each class holds its shape against its neighbours (Cohen & Massaro's dominance). Lips
# of alveolars and velars are free, so they take their shape from the vowels around them; labials and
# rounded vowels impose theirs.
VISEME_DOMINANCE = np.array([0.5, 1.0, 0.9, 0.55, 0.3, 0.25, 0.8, 0.6, 0.6, 0.75, 0.6, 0.6, 0.75, 0.85],
                            dtype=np.float32)
# Channels the speech energy scales (how far the mouth opens), as a mask over MOUTH_CHANNELS.
OPENING_MASK = np.array([n in ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                               "mouthUpperUpRight", "mouthFunnel") for n in MOUTH_CHANNELS], dtype=np.float32)
