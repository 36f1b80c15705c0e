"""``affectkit export``: a run or shipped model as one self-describing ONNX file, and the
onnxruntime runner that ``analyze --engine onnx`` uses.

The graph takes ``image`` (N, 3, S, S), normalised as the run's evaluation transform leaves
it (S = ``data.img_size``), with a dynamic batch, and returns the model's named outputs
(``expr_logits``, ``au_logits``, ``va`` as it has them). The file's metadata carries what a
user needs to feed and read it: the run's resolved config (``affectkit_config``, JSON),
the output names, the AU thresholds the run uses, and for a shipped model the face
template and grayscale flag of its card. Exported with PyTorch's own exporter
(``torch.onnx.export(dynamo=True)``; needs ``onnx`` and ``onnxscript``: ``pip install
affectkit[onnx]``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import config_from_dict, config_to_dict
from ..io import atomic_write

OUTPUTS = ("va", "expr_logits", "au_logits")


class _Outputs(nn.Module):
    """The model with its dict of outputs as a tuple in ``names`` order (ONNX outputs)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, image):
        out = self.model(image)
        return tuple(out[n] for n in self.names)


def export_onnx(source: str, out: str | os.PathLike, *, opset: int | None = None) -> Path:
    """Export a shipped model (by name) or a run folder / checkpoint to ``out`` (.onnx),
    atomically; returns the path."""
    from .. import load_model, zoo
    from .inference import RunError, run_thresholds

    try:
        import onnx
    except ImportError:
        raise RunError("ONNX export needs the 'onnx' and 'onnxscript' packages "
                       "(pip install 'affectkit[onnx]')") from None
    run = load_model(source, "cpu")
    model = run.model.eval()
    size = run.cfg.data.img_size
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        names = [n for n in OUTPUTS if n in model(example)]
    wrapped = _Outputs(model, names).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        kw = {"opset_version": opset} if opset else {}
        torch.onnx.export(wrapped, (example,), str(path), input_names=["image"],
                          output_names=names, dynamo=True, external_data=False,
                          dynamic_shapes={"image": {0: torch.export.Dim("batch")}}, **kw)
        proto = onnx.load(str(path))
    thresholds, _ = run_thresholds(run)
    card = zoo.read_card(source) if zoo.is_shipped(source) else {}
    meta = {"affectkit_config": json.dumps(config_to_dict(run.cfg)),
            "affectkit_outputs": json.dumps(names),
            "affectkit_source": str(source),
            "affectkit_au_thresholds": json.dumps(
                thresholds.tolist() if thresholds is not None else 0.5),
            "affectkit_face": json.dumps({k: card[k] for k in ("face_template",
                                                               "grayscale_input")
                                          if k in card})}
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write(out, lambda f: f.write(proto.SerializeToString()))


class OnnxModel:
    """An exported file under onnxruntime, called like the torch model: a (N, 3, S, S)
    tensor in, a dict of named output tensors out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from .inference import RunError

        try:
            import onnxruntime as ort
        except ImportError:
            raise RunError("--engine onnx needs onnxruntime (pip install "
                           "'affectkit[onnx]')") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # not an ONNX file, truncated, ...
            raise RunError(f"{path}: not a readable ONNX model ({e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "affectkit_config" not in meta:
            raise RunError(f"{path}: not exported by affectkit export (no affectkit "
                           "metadata)")
        self.path = Path(path)
        self.cfg = config_from_dict(json.loads(meta["affectkit_config"]))
        self.names = json.loads(meta["affectkit_outputs"])
        self.au_thresholds = np.asarray(json.loads(meta["affectkit_au_thresholds"]))
        self.face = json.loads(meta.get("affectkit_face", "{}"))
        self.input = self.session.get_inputs()[0].name

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.session.run(None, {self.input: image.detach().cpu().numpy()})
        return {n: torch.from_numpy(v) for n, v in zip(self.names, out)}
