"""``affectkit analyze``: every face in photos and videos, one row per (frame, face).

Frames are streamed (a video is never held in memory: PyAV decodes it frame by frame, with
the container's own timestamps, so variable frame rates stay right); every ``every``-th
frame is analysed. Faces are found by MTCNN (``faces.mtcnn``), aligned to the model's
training crops from their five landmarks (``faces.align``), batched through the model, and
followed across frames by box overlap (``face_id``). In a video, ``detect_every=N`` runs
the full detector on every N-th analysed frame only and, in between, MTCNN's last two
stages on the previous frame's faces (``MTCNN.refine``): most of the detector's cost is
the first stage's image pyramid, so this is the speed lever for long videos; a frame
where a face is lost, or one without faces, gets a full detection at once, a new face
waits for the next one. A frame with no face gives one row
with ``face_detected = 0``; an unreadable file is reported by name and the others go on;
files that are neither images nor videos are skipped and counted.

Columns: ``file``, ``frame``, ``timestamp`` (s; empty for photos), ``face_id``,
``face_detected``, ``confidence``, the box ``x1 y1 x2 y2``, the landmarks ``lm1_x`` ..
``lm5_y`` (left eye, right eye, nose, mouth corners), then the model's
(``data.submission.prediction_table``): ``valence``, ``arousal`` (empty without a VA
head), one probability per expression, ``expression``, ``AU01``.. and ``AU01_present``..
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.folders import IMAGE_EXTENSIONS
from ..data.submission import prediction_table
from ..faces.align import align_face, box_crop, box_iou

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                    ".wmv", ".flv", ".3gp"}
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Frame:
    file: str
    index: int  # frame number in the file (0 for a photo)
    timestamp: float | None  # seconds, from the container (None for a photo)
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass
class Inputs:
    """What a path holds: the files to analyse, and what was skipped."""

    files: list[Path]
    skipped: list[Path] = field(default_factory=list)


def collect_inputs(path: str | os.PathLike) -> Inputs:
    """A photo, a video, or a folder of them (recursive, sorted); other files skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files, skipped = [], []
    for p in candidates:
        (files if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS else skipped).append(p)
    if not files:
        raise FileNotFoundError(f"{path}: no image or video files "
                                f"({len(skipped)} other file(s) skipped)")
    return Inputs(files, skipped)


def iter_frames(path: Path, every: int = 1) -> Iterator[Frame]:
    """Every ``every``-th frame of a video (decoded as it streams), or the photo."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        from PIL import Image

        with Image.open(path) as im:
            yield Frame(str(path), 0, None, np.asarray(im.convert("RGB")))
        return
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i % every:
                continue
            t = float(frame.time) if frame.time is not None else None
            yield Frame(str(path), i, t, frame.to_ndarray(format="rgb24"))


class FaceTracker:
    """``face_id`` across the frames of one file: a face continues the track whose last box
    it overlaps most (IoU >= ``min_iou``); tracks unseen for ``max_age`` analysed frames end."""

    def __init__(self, min_iou: float = 0.3, max_age: int = 30):
        self.min_iou, self.max_age = min_iou, max_age
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (box, last step)
        self.next_id, self.step = 0, 0

    def assign(self, boxes: list[np.ndarray]) -> list[int]:
        self.step += 1
        self.tracks = {k: v for k, v in self.tracks.items()
                       if self.step - v[1] <= self.max_age}
        pairs = sorted(((box_iou(b, t[0]), i, k) for i, b in enumerate(boxes)
                        for k, t in self.tracks.items()), reverse=True)
        ids: dict[int, int] = {}
        used = set()
        for iou, i, k in pairs:
            if iou < self.min_iou:
                break
            if i not in ids and k not in used:
                ids[i] = k
                used.add(k)
        for i in range(len(boxes)):
            if i not in ids:
                ids[i], self.next_id = self.next_id, self.next_id + 1
            self.tracks[ids[i]] = (boxes[i], self.step)
        return [ids[i] for i in range(len(boxes))]


class Analyzer:
    """A model (a shipped one by name, a run, or an exported ``.onnx`` file) with a face
    detector, ready to analyse. ``engine="onnx"`` runs the model under onnxruntime
    (exported on the fly when it is not an .onnx file already)."""

    def __init__(self, model: str = "default", *, device=None, min_face: int = 20,
                 template: str | None = None, grayscale: bool | None = None,
                 batch_size: int = 64, engine: str = "torch", detect_every: int = 1):
        from .. import zoo
        from ..data.augment import transforms_for
        from ..faces.mtcnn import MTCNN
        from .build import model_labels

        if engine not in ("torch", "onnx"):
            raise ValueError(f"engine {engine!r}: 'torch' or 'onnx'")
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = detect_every
        model = str(model)
        self._tmp = None
        if model.endswith(".onnx") or engine == "onnx":
            from .export import OnnxModel, export_onnx

            if not model.endswith(".onnx"):
                self._tmp = tempfile.TemporaryDirectory()
                model_path = export_onnx(model, Path(self._tmp.name) / "model.onnx")
            else:
                model_path = model
            onnx = OnnxModel(model_path)
            self.cfg, self.forward, face = onnx.cfg, onnx, onnx.face
            self.device = torch.device("cpu")
            thr = onnx.au_thresholds
            self.thresholds = thr if thr.ndim else float(thr)
            self.engine = "onnx"
        else:
            from .. import load_model
            from .inference import run_thresholds

            run = load_model(model, device)
            self.cfg, self.forward, self.device = run.cfg, run.model, run.device
            face = zoo.read_card(model) if zoo.is_shipped(model) else {}
            found, _ = run_thresholds(run)
            self.thresholds = found if found is not None else 0.5
            self.engine = "torch"
        self.labels = model_labels(self.cfg)
        self.detector = MTCNN(min_face=min_face).to(self.device)
        d = self.cfg.data
        # the template of the model's training crops: FER-style for the shipped models
        # and runs on CSV / class-folder datasets, the 112 px one for ABAW-layout runs
        self.template = template or face.get("face_template") or (
            "arcface112" if d.layout in ("mtl", "per-video", "lsd", "auto") else "fer48")
        self.grayscale = face.get("grayscale_input", False) if grayscale is None else grayscale
        self.crop = d.resize if d.eval_crop else d.img_size  # what the eval transform reads
        self.transform = transforms_for(d)[1]
        self.batch_size = batch_size
        self.seconds: dict[str, float] = {}  # time per stage, over every file analysed

    def crops(self, frame: Frame, faces) -> torch.Tensor:
        out = []
        for f in faces:
            im = (align_face(frame.image, f.landmarks, self.crop, self.template)
                  if f.landmarks is not None else box_crop(frame.image, f.box, self.crop))
            if self.grayscale:
                im = im.convert("L").convert("RGB")
            out.append(self.transform(torch.from_numpy(np.array(im)).permute(2, 0, 1)))
        return torch.stack(out)

    @torch.no_grad()
    def predict(self, crops: torch.Tensor) -> dict[str, np.ndarray]:
        from ..models.ensemble import member_probabilities

        parts: dict[str, list] = {}
        for s in range(0, len(crops), self.batch_size):
            out = member_probabilities(self.forward(crops[s:s + self.batch_size]
                                                    .to(self.device)))
            for k, v in out.items():
                parts.setdefault(k, []).append(v.float().cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    def analyze_file(self, path: Path, every: int = 1, progress=None,
                     chunk: int = 256) -> Iterator[pd.DataFrame]:
        """The rows of one photo or video, ``chunk`` analysed frames at a time (what a
        killed run has analysed is never lost); the seconds spent per stage (decode,
        detect, align, model) add up in ``self.seconds``."""
        tracker = FaceTracker()
        meta, crops = [], []
        clock = time.perf_counter
        frames = iter_frames(path, every)
        done, held, analysed, previous = False, 0, 0, []
        while not done:
            t0 = clock()
            frame = next(frames, None)
            t1 = clock()
            done = frame is None
            if frame is not None:
                faces = None
                if previous and analysed % self.detect_every:
                    faces = self.detector.refine(frame.image, [f.box for f in previous])
                    if len(faces) < len(previous):  # a face lost: look everywhere at once
                        faces = None
                if faces is None:
                    faces = self.detector.detect(frame.image)
                analysed, previous = analysed + 1, faces
                t2 = clock()
                if not faces:
                    meta.append(_row(frame, None, None))
                else:
                    ids = tracker.assign([f.box for f in faces])
                    meta.extend(_row(frame, f, k) for f, k in zip(faces, ids))
                    crops.append(self.crops(frame, faces))
                for k, dt in (("decode", t1 - t0), ("detect", t2 - t1),
                              ("align", clock() - t2)):
                    self.seconds[k] = self.seconds.get(k, 0.0) + dt
                self.seconds["frames"] = self.seconds.get("frames", 0) + 1
                held += 1
                if progress is not None:
                    progress(1)
            if meta and (done or held >= chunk):
                yield self._predicted(pd.DataFrame(meta), crops)
                meta, crops, held = [], [], 0

    def _predicted(self, table: pd.DataFrame, crops: list[torch.Tensor]) -> pd.DataFrame:
        """``table`` (one row per frame and face) with the model's columns for its faces."""
        detected = table["face_detected"].to_numpy() == 1
        if detected.any():
            t0 = time.perf_counter()
            arrays = self.predict(torch.cat(crops))
            self.seconds["model"] = self.seconds.get("model", 0.0) + time.perf_counter() - t0
            preds = prediction_table(["x"] * int(detected.sum()), arrays, self.labels,
                                     self.thresholds).drop(columns="image")
            full = pd.DataFrame(index=range(len(table)), columns=preds.columns, dtype=object)
            full.loc[np.flatnonzero(detected)] = preds.to_numpy()
            table = pd.concat([table, full.infer_objects()], axis=1)
        return table


def _row(frame: Frame, face, face_id) -> dict:
    row = {"file": frame.file, "frame": frame.index, "timestamp": frame.timestamp,
           "face_id": face_id, "face_detected": int(face is not None),
           "confidence": face.score if face is not None else np.nan}
    box = face.box if face is not None else [np.nan] * 4
    row.update(dict(zip(("x1", "y1", "x2", "y2"), map(float, box))))
    lm = face.landmarks if face is not None else np.full((5, 2), np.nan)
    for name, (x, y) in zip(LANDMARKS, lm):
        row[f"{name}_x"], row[f"{name}_y"] = float(x), float(y)
    return row


def smooth_tracks(table: pd.DataFrame, an: Analyzer, mode: str, width: int) -> pd.DataFrame:
    """Each face track's probabilities and VA smoothed over its frames (``smoothing``:
    box, gaussian or median over ``width`` analysed frames), then its ``expression`` and
    ``AUxx_present`` decided again from the smoothed values."""
    from ..data.submission import au_column
    from ..labels import ABAW_AU
    from ..metrics import binarize_au
    from ..smoothing import smooth_sequence

    if mode == "none" or width == 1 or "expression" not in table:
        return table
    table = table.copy()
    classes = [c.lower() for c in an.labels.classes]
    aus = [au_column(a) for a in ABAW_AU.classes if au_column(a) in table]
    va = ["valence", "arousal"] if table["valence"].notna().any() else []
    faces = table[table["face_detected"] == 1]
    for _, rows in faces.groupby(["file", "face_id"]):
        idx = rows.sort_values("frame").index
        for cols in (classes, aus, va):
            if cols:
                table.loc[idx, cols] = smooth_sequence(
                    table.loc[idx, cols].to_numpy(float), width, mode)
        table.loc[idx, "expression"] = np.asarray(classes)[
            table.loc[idx, classes].to_numpy(float).argmax(1)]
        if aus:
            table.loc[idx, [f"{a}_present" for a in aus]] = binarize_au(
                table.loc[idx, aus].to_numpy(float), an.thresholds)
    return table


def analyze(path: str | os.PathLike, model: str = "default", *, every: int = 1,
            out: str | os.PathLike | None = None, plots: str | os.PathLike | None = None,
            smoothing: str = "none", width: int = 1,
            annotated: str | os.PathLike | None = None, device=None, min_face: int = 20,
            engine: str = "torch", detect_every: int = 1, progress: bool = False,
            analyzer: Analyzer | None = None) -> pd.DataFrame:
    """Every face in a photo, a video or a folder of them -> a DataFrame (module docstring
    for the columns); with ``out`` also written (.csv or .parquet, atomically; an
    interrupted run writes the rows it has), with ``plots`` a PNG per file and face
    (``report.plot_analysis``). Unreadable files are logged by name and listed in
    ``DataFrame.attrs["failed"]``; skipped non-media files counted in
    ``attrs["skipped"]``. ``smoothing`` / ``width``: each face track smoothed over time
    (``smooth_tracks``). ``annotated``: a folder for each file again with the boxes and
    labels drawn (``annotate``). ``detect_every``: full face detection on every N-th
    analysed video frame, the previous faces refined in between (module docstring)."""
    from ..data.submission import write_prediction_table

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    from ..smoothing import MODES

    if smoothing not in MODES:
        raise ValueError(f"smoothing {smoothing!r}: one of {', '.join(MODES)}")
    if smoothing != "none" and (width < 1 or width % 2 == 0):
        raise ValueError(f"smoothing width must be an odd number >= 1, got {width}")
    inputs = collect_inputs(path)
    if inputs.skipped:
        log.info("%s: %d file(s) that are neither images nor videos skipped", path,
                 len(inputs.skipped))
    an = analyzer or Analyzer(model, device=device, min_face=min_face, engine=engine,
                              detect_every=detect_every)
    tables, failed = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="frame", desc="analyze", disable=None)
    try:
        for f in inputs.files:
            try:
                for part in an.analyze_file(f, every, bar.update if bar is not None else None):
                    tables.append(part)
            except Exception as e:  # a broken file is reported; the others go on
                if isinstance(e, (KeyboardInterrupt, MemoryError)):
                    raise
                log.warning("%s: cannot be read (%s): skipped", f, e)
                failed.append((str(f), str(e)))
    finally:
        if bar is not None:
            bar.close()
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        if len(table):
            table = smooth_tracks(table, an, smoothing, width)
        table.attrs.update(failed=failed, skipped=len(inputs.skipped))
        if out is not None and len(table):
            write_prediction_table(out, table)
    if plots is not None and len(table) and "expression" in table:
        from ..data.submission import au_column
        from ..labels import ABAW_AU
        from ..report import plot_analysis

        aus = [au_column(a) for a in ABAW_AU.classes if au_column(a) in table]
        table.attrs["plots"] = plot_analysis(
            plots, table, [c.lower() for c in an.labels.classes], aus)
    if annotated is not None and len(table):
        table.attrs["annotated"] = annotate(table, annotated)
    return table


# ----------------------------------------------------------------------------- annotated


def _draw(image: np.ndarray, rows: pd.DataFrame):
    """``image`` with each face's box, ``face_id``, expression and its probability."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    for _, r in rows.iterrows():
        if r["face_detected"] != 1:
            continue
        box = [float(r[k]) for k in ("x1", "y1", "x2", "y2")]
        d.rectangle(box, outline=(255, 210, 0), width=max(2, im.width // 400))
        label = f"#{int(r['face_id'])}"
        if isinstance(r.get("expression"), str):
            label += f" {r['expression']} {float(r[r['expression']]):.2f}"
        if pd.notna(r.get("valence")):
            label += f" V{float(r['valence']):+.2f} A{float(r['arousal']):+.2f}"
        d.text((box[0], max(0.0, box[1] - 12)), label, fill=(255, 210, 0))
    return im


def annotate(table: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Each analysed file again with the table's boxes and labels drawn: a photo as
    ``<stem>-annotated.png``, a video as ``<stem>-annotated.mp4`` at its frame rate (every
    frame, each showing the latest analysed frame's faces) with its sound. Written
    atomically."""
    from ..io import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, rows in table.groupby("file", sort=True):
        path = Path(file)
        by_frame = dict(tuple(rows.groupby("frame")))
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            frame = next(iter_frames(path))
            im = _draw(frame.image, by_frame.get(0, rows.iloc[:0]))
            paths.append(atomic_write(out_dir / f"{path.stem}-annotated.png",
                                      lambda f, im=im: im.save(f, format="PNG")))
            continue
        import av

        target = out_dir / f"{path.stem}-annotated.mp4"
        tmp = target.with_name(target.name + ".tmp.mp4")
        with av.open(str(path)) as src, av.open(str(tmp), "w") as dst:
            stream = src.streams.video[0]
            rate = stream.average_rate or 25
            out = dst.add_stream("mpeg4", rate=rate)
            out.width, out.height = stream.codec_context.width, stream.codec_context.height
            out.pix_fmt = "yuv420p"
            # the sound goes along, re-encoded as AAC (MP4 takes few of the codecs a source
            # may carry); frame times are the encoder's own, continuous from the start
            sound = src.streams.audio[0] if src.streams.audio else None
            if sound is not None:
                sound_out = dst.add_stream("aac", rate=sound.codec_context.sample_rate)
                sound_out.layout = sound.codec_context.layout
            current = rows.iloc[:0]
            i = 0
            for packet in src.demux(*([stream] + ([sound] if sound is not None else []))):
                for frame in packet.decode():
                    if packet.stream is stream:
                        current = by_frame.get(i, current)
                        encoded = out.encode(av.VideoFrame.from_image(
                            _draw(frame.to_ndarray(format="rgb24"), current)))
                        i += 1
                    else:
                        frame.pts = None
                        encoded = sound_out.encode(frame)
                    for p in encoded:
                        dst.mux(p)
            for s in [out] + ([sound_out] if sound is not None else []):
                for p in s.encode():
                    dst.mux(p)
        os.replace(tmp, target)
        paths.append(target)
    return paths
