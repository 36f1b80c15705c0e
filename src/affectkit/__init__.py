"""affectkit: facial affect analysis (valence-arousal, expression, action units)."""

__version__ = "0.1.0"


def load_model(name: str = "default", device=None):
    """A shipped model (``affectkit models``; ``"default"``: the default one) or a run
    folder / checkpoint file, on ``device`` in eval mode: an ``engine.inference.LoadedRun``
    (``.model``, ``.cfg``, ``.labels``). Imports torch on first call, not on import."""
    from . import zoo
    from .engine.inference import load_run

    return load_run(zoo.weights(name) if zoo.is_shipped(name) else name, device)


def analyze(path, model: str = "default", **kw):
    """Every face in a photo, a video or a folder of them: a pandas DataFrame with one row
    per (frame, face) (``engine.analyze.analyze``: columns, ``every``, ``out``, ``plots``).
    ``model``: a shipped model name or a run folder."""
    from .engine.analyze import analyze as _analyze

    return _analyze(path, model, **kw)
