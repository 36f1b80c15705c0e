"""affectkit: facial affect analysis (valence-arousal, expression, action units)."""

__version__ = "0.1.0"
