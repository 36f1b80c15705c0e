"""affectkit: facial affect analysis (valence-arousal, expression, action units)."""

__version__ = "0.1.0"


def load_model(name: str = "default", device=None):
    """A shipped model (``affectkit models``; ``"default"``: the default one) or a run
    folder / checkpoint file, on ``device`` in eval mode: an ``engine.inference.LoadedRun``
    (``.model``, ``.cfg``, ``.labels``). Imports torch on first call, not on import."""
    from . import zoo
    from .engine.inference import load_run

    return load_run(zoo.weights(name) if zoo.is_shipped(name) else name, device)
