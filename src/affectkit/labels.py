"""Label spaces of the field and explicit, by-name mappings between them.

Datasets order their expression classes differently (ABAW, AffectNet, FER2013,
CK+, LSD) and tools name action units differently (ABAW ``AU1``, OpenFace
``AU01_r``, py-feat ``AU01``). Mapping by position silently swaps classes, so
every mapping here goes through canonical names.

Sentinels follow the ABAW release files: valence/arousal ``-5``, expression
``-1``, each AU ``-1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

VA_INVALID = -5.0
EXPR_INVALID = -1
AU_INVALID = -1

# Canonical expression names, and the spellings met in the wild.
_EXPR_ALIASES = {
    "neutral": "neutral",
    "anger": "anger",
    "angry": "anger",
    "angere": "anger",  # one ABAW4 LSD release misspells the ANGER folder
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
    "other": "other",
}


def canonical_expression(name: str) -> str:
    """Canonical expression name (``'Happy'``, ``'HAPPINESS'`` -> ``'happiness'``)."""
    key = name.strip().lower()
    if key not in _EXPR_ALIASES:
        raise KeyError(f"unknown expression name {name!r}")
    return _EXPR_ALIASES[key]


_AU_RE = re.compile(r"^\s*AU\s*0*(\d+)(?:_[rc])?\s*$", re.IGNORECASE)


def canonical_au(name: str) -> str:
    """Canonical AU name: ``'AU01_r'``, ``'AU01'``, ``'au1'`` -> ``'AU1'``."""
    m = _AU_RE.match(name)
    if not m:
        raise KeyError(f"not an action unit name: {name!r}")
    return f"AU{int(m.group(1))}"


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of class (or AU) names; ``kind`` is 'expression' or 'au'."""

    name: str
    kind: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        canon = [self._canon(c) for c in self.classes]
        if len(set(canon)) != len(canon):
            raise ValueError(f"label set {self.name!r} has duplicate classes: {self.classes}")

    def __len__(self) -> int:
        return len(self.classes)

    def _canon(self, name: str) -> str:
        return canonical_expression(name) if self.kind == "expression" else canonical_au(name)

    @property
    def canonical(self) -> tuple[str, ...]:
        return tuple(self._canon(c) for c in self.classes)

    def index(self, name: str) -> int:
        """Index of a class given any accepted spelling of its name."""
        try:
            return self.canonical.index(self._canon(name))
        except (KeyError, ValueError):
            raise KeyError(
                f"{name!r} is not a class of label set {self.name!r} {list(self.classes)}"
            ) from None

    def parse(self, value: str) -> int:
        """Index from a name or an integer string (``'-1'`` stays the invalid sentinel)."""
        value = value.strip()
        if re.fullmatch(r"-?\d+", value):
            idx = int(value)
            if idx == EXPR_INVALID or 0 <= idx < len(self):
                return idx
            raise ValueError(
                f"class index {idx} out of range for {self.name!r} (0..{len(self) - 1})"
            )
        return self.index(value)

    def mapping_to(self, other: LabelSet) -> np.ndarray:
        """``m[i]`` = index in ``other`` of class ``i`` of this set, or -1 when absent there."""
        if self.kind != other.kind:
            raise ValueError(f"cannot map {self.kind} set {self.name!r} to {other.kind} set")
        target = {c: j for j, c in enumerate(other.canonical)}
        return np.array([target.get(c, -1) for c in self.canonical], dtype=np.int64)

    def convert(self, indices, other: LabelSet) -> np.ndarray:
        """Map class indices to ``other``'s order; invalid (-1) or absent classes become -1."""
        idx = np.asarray(indices, dtype=np.int64)
        table = np.append(self.mapping_to(other), -1)  # index -1 picks the appended -1
        return table[np.where((idx >= 0) & (idx < len(self)), idx, -1)]


ABAW_EXPR = LabelSet(
    "abaw_expr",
    "expression",
    ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"),
)
LSD = LabelSet(
    "lsd", "expression", ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
)
AFFECTNET8 = LabelSet(
    "affectnet8",
    "expression",
    ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"),
)
FER2013 = LabelSet(
    "fer2013", "expression", ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
)
CKPLUS = LabelSet(
    "ckplus",
    "expression",
    ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
)
ABAW_AU = LabelSet(
    "abaw_au",
    "au",
    ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"),
)
CKPLUS_AU = LabelSet(
    "ckplus_au",
    "au",
    tuple(f"AU{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27)),
)

LABEL_SETS: dict[str, LabelSet] = {
    s.name: s for s in (ABAW_EXPR, LSD, AFFECTNET8, FER2013, CKPLUS, ABAW_AU, CKPLUS_AU)
}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}") from None


# Validity masks: one definition of "labelled" for every reader, loss and metric.
def va_valid(va):
    """Rows (..., 2) whose valence and arousal are both labelled (not the -5 sentinel).

    Works on numpy arrays and torch tensors alike.
    """
    return (abs(va[..., 0] - VA_INVALID) > 1e-6) & (abs(va[..., 1] - VA_INVALID) > 1e-6)


def expr_valid(expression):
    """Expression labels that are not the -1 sentinel."""
    return expression >= 0


def au_valid(au):
    """Per-AU entries that are not the -1 sentinel."""
    return au >= 0
