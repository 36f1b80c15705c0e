"""Face detection (issue 15's foundation): MTCNN written here, on the weight files of the
facenet-pytorch wheel, checked on real faces: the AFEW-VA clip (one face per frame, 68
annotated landmarks) and CK+ faces pasted at known places and sizes into larger frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from affectkit.faces.align import box_iou


@pytest.fixture(scope="module")
def mtcnn():
    from affectkit.faces.mtcnn import MTCNN, weights_dir

    try:
        folder = weights_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    if not (folder / "pnet.pt").is_file():
        pytest.skip(f"MTCNN weights absent from {folder}")
    return MTCNN()


def test_the_afew_face_is_found_in_every_frame_where_its_landmarks_are(mtcnn, shared_data):
    clip = shared_data / "afew_va_clip001"
    frames = json.loads((clip / "001.json").read_text())["frames"]
    for name in sorted(frames):  # all 42 frames
        image = np.asarray(Image.open(clip / f"{name}.png").convert("RGB"))
        faces = mtcnn.detect(image)
        assert len(faces) == 1, name
        lm = np.asarray(frames[name]["landmarks"], np.float64)  # 68 points (x, y)
        ref = np.concatenate([lm.min(0), lm.max(0)])
        assert box_iou(faces[0].box, ref) > 0.5, (name, faces[0].box, ref)
        eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
        width = ref[2] - ref[0]
        err = np.linalg.norm(faces[0].landmarks[:2] - eyes, axis=1)
        assert (err < 0.2 * width).all(), (name, err, width)
        assert faces[0].score > 0.9


@pytest.mark.parametrize("size", [50, 80, 140])
def test_real_faces_pasted_at_known_places_are_found(mtcnn, shared_data, size):
    files = sorted((shared_data / "ckplus48" / "images").glob("*/*.png"))[::60][:8]
    assert files
    rng = np.random.default_rng(size)
    found = 0
    for i in range(0, len(files), 2):  # two faces per frame
        canvas = np.zeros((360, 640, 3), np.uint8) + rng.integers(40, 220, 3).astype(np.uint8)
        truth = []
        for j, f in enumerate(files[i:i + 2]):
            face = np.asarray(Image.open(f).convert("RGB").resize((size, size)))
            x = int(rng.integers(0, 320 - size)) + 320 * j
            y = int(rng.integers(0, 360 - size))
            canvas[y:y + size, x:x + size] = face
            truth.append((x, y, x + size, y + size))
        faces = mtcnn.detect(canvas)
        found += sum(any(box_iou(d.box, t) > 0.4 for d in faces) for t in truth)
        assert len(faces) <= len(truth) + 1  # no shower of false positives
    assert found >= len(files) - 1, f"{found}/{len(files)} faces of {size} px found"


def test_missing_weights_name_the_file(tmp_path):
    from affectkit.faces.mtcnn import MTCNN

    with pytest.raises(FileNotFoundError, match="pnet.pt"):
        MTCNN(weights=tmp_path)


def test_bad_image_and_an_empty_frame(mtcnn):
    with pytest.raises(ValueError, match="RGB image"):
        mtcnn.detect(np.zeros((32, 32), np.uint8))
    assert mtcnn.detect(np.full((120, 160, 3), 128, np.uint8)) == []


# ----------------------------------------------------------------------------- analyze


def test_refine_follows_the_afew_face_from_the_previous_frame(mtcnn, shared_data):
    """MTCNN's last two stages on the previous frame's box find the face of this frame
    (the full detector's box, the annotated eyes), frame after frame; on a faceless image
    the same box gives nothing."""
    clip = shared_data / "afew_va_clip001"
    frames = json.loads((clip / "001.json").read_text())["frames"]
    names = sorted(frames)
    previous = mtcnn.detect(np.asarray(Image.open(clip / f"{names[0]}.png").convert("RGB")))
    for name in names[1:]:
        image = np.asarray(Image.open(clip / f"{name}.png").convert("RGB"))
        faces = mtcnn.refine(image, [f.box for f in previous])
        assert len(faces) == 1, name
        assert box_iou(faces[0].box, mtcnn.detect(image)[0].box) > 0.7, name
        lm = np.asarray(frames[name]["landmarks"], np.float64)  # 68 points (x, y)
        ref = np.concatenate([lm.min(0), lm.max(0)])
        eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
        err = np.linalg.norm(faces[0].landmarks[:2] - eyes, axis=1)
        assert (err < 0.2 * (ref[2] - ref[0])).all(), (name, err)  # as the full detector
        previous = faces
    assert mtcnn.refine(np.full((576, 720, 3), 90, np.uint8), [previous[0].box]) == []
    assert mtcnn.refine(image, np.zeros((0, 4))) == []


def _write_video(path, frames, fps=25):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_analyze_a_real_video_a_photo_and_a_folder_with_bad_files(mtcnn, shared_data,
                                                                  tmp_path):
    pytest.importorskip("av")
    import affectkit
    from affectkit.cli import main

    clip = shared_data / "afew_va_clip001"
    marks = json.loads((clip / "001.json").read_text())["frames"]
    names = sorted(marks)[:24]
    frames = [np.asarray(Image.open(clip / f"{n}.png").convert("RGB")) for n in names]
    folder = tmp_path / "media"
    folder.mkdir()
    _write_video(folder / "clip.mp4", frames)
    Image.fromarray(frames[0]).save(folder / "photo.jpg")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "wall.png")  # no face
    (folder / "notes.txt").write_text("not media")
    (folder / "broken.mp4").write_bytes((folder / "clip.mp4").read_bytes()[:300])
    table = affectkit.analyze(folder, every=3, plots=tmp_path / "plots",
                              annotated=tmp_path / "annotated")
    assert table.attrs["skipped"] == 1 and [f for f, _ in table.attrs["failed"]] == [
        str(folder / "broken.mp4")]
    video = table[table.file == str(folder / "clip.mp4")]
    assert video.frame.tolist() == list(range(0, 24, 3))  # every 3rd frame, one face each
    assert (video.face_detected == 1).all() and video.face_id.nunique() == 1
    assert np.all(np.diff(video.timestamp.to_numpy(float)) > 0)
    assert video.timestamp.iloc[1] == pytest.approx(3 / 25, abs=1e-3)
    for _, row in video.iterrows():  # the box sits on the annotated face
        lm = np.asarray(marks[names[row.frame]]["landmarks"], float)
        ref = np.concatenate([lm.min(0), lm.max(0)])
        assert box_iou([row.x1, row.y1, row.x2, row.y2], ref) > 0.5
    probs = video[["neutral", "anger", "disgust", "fear", "happiness", "sadness",
                   "surprise", "other"]].to_numpy(float)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert video.valence.isna().all()  # the default model has no VA head
    assert set(video.AU12_present.unique()) <= {0, 1}
    wall = table[table.file == str(folder / "wall.png")]
    assert len(wall) == 1 and wall.face_detected.iloc[0] == 0 and wall.expression.isna().all()
    assert len(table.attrs["plots"]) == 2 and all(p.is_file() for p in table.attrs["plots"])
    import av

    written = {p.name: p for p in table.attrs["annotated"]}
    assert set(written) == {"clip-annotated.mp4", "photo-annotated.png", "wall-annotated.png"}
    with av.open(str(written["clip-annotated.mp4"])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 24  # every frame, boxes held between
    drawn = np.asarray(Image.open(written["photo-annotated.png"]), np.int16)
    assert np.abs(drawn - frames[0]).max() > 100  # the box is there
    # a face track smoothed over time: the same rows, calmer probabilities
    smooth = affectkit.analyze(folder / "clip.mp4", every=3, smoothing="box", width=3)
    cols = ["surprise", "fear", "AU01", "AU25"]
    raw = video[cols].to_numpy(float)
    calm = smooth[cols].to_numpy(float)
    assert len(smooth) == len(video)
    assert np.abs(np.diff(calm, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()
    # full detection on every 4th analysed frame, the face refined in between: the same
    # face in every frame, the box on the annotated one
    tracked = affectkit.analyze(folder / "clip.mp4", detect_every=4)
    full = affectkit.analyze(folder / "clip.mp4")
    assert len(tracked) == 24 and tracked.face_id.nunique() == 1
    # MPEG-4 blurs one frame past the detector; tracking finds at least as many
    assert tracked.face_detected.sum() >= full.face_detected.sum() >= 23
    for _, row in tracked[tracked.face_detected == 1].iterrows():
        lm = np.asarray(marks[names[row.frame]]["landmarks"], float)
        ref = np.concatenate([lm.min(0), lm.max(0)])
        assert box_iou([row.x1, row.y1, row.x2, row.y2], ref) > 0.5
    with pytest.raises(ValueError, match="detect_every"):
        affectkit.analyze(folder / "photo.jpg", detect_every=0)
    with pytest.raises(ValueError, match="odd"):
        affectkit.analyze(folder / "photo.jpg", smoothing="box", width=4)
    # the command: a CSV, and a clear error for a missing path
    out = tmp_path / "photo.csv"
    assert main(["analyze", str(folder / "photo.jpg"), "--out", str(out)]) == 0
    import pandas as pd

    assert len(pd.read_csv(out)) == 1
    assert main(["analyze", str(tmp_path / "nope.mp4")]) == 2


def test_onnx_export_matches_torch_and_analyze_runs_on_it(mtcnn, shared_data, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import torch

    import affectkit
    from affectkit.cli import main
    from affectkit.engine.export import OnnxModel

    out = tmp_path / "default.onnx"
    assert main(["export", "default", "--out", str(out)]) == 0
    onnx = OnnxModel(out)
    run = affectkit.load_model("default", "cpu")
    x = torch.randn(5, 3, run.cfg.data.img_size, run.cfg.data.img_size)
    with torch.no_grad():
        ref = run.model(x)
    got = onnx(x)
    assert set(got) == {"expr_logits", "au_logits"}  # no VA head, no VA output
    for k, v in got.items():
        torch.testing.assert_close(v, ref[k], atol=1e-4, rtol=1e-4)
    assert onnx.face == {"face_template": "fer48", "grayscale_input": True}
    photo = shared_data / "afew_va_clip001" / "00000.png"
    a = affectkit.analyze(photo)
    b = affectkit.analyze(photo, model=str(out))
    cols = ["surprise", "AU01", "AU12", "x1"]
    np.testing.assert_allclose(a[cols].to_numpy(float), b[cols].to_numpy(float), atol=1e-4)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    assert main(["analyze", str(photo), "--model", str(tmp_path / "bad.onnx")]) == 2


def test_annotated_video_keeps_its_sound(tmp_path):
    """``--annotate`` writes a video with the source's sound (re-encoded as AAC, from an
    MP2 track in an AVI here) and every video frame."""
    av = pytest.importorskip("av")
    import pandas as pd

    from affectkit.engine.analyze import annotate

    src, sr, fps, n = tmp_path / "talk.avi", 16000, 25, 25
    with av.open(str(src), "w") as c:
        v = c.add_stream("mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        a = c.add_stream("mp2", rate=sr)
        a.layout = "mono"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 9 * i, np.uint8),
                                               format="rgb24")
            for p in v.encode(frame):
                c.mux(p)
        t = np.arange(sr * n // fps) / sr
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        for s in range(0, len(pcm), 1024):
            f = av.AudioFrame.from_ndarray(pcm[None, s:s + 1024], format="s16", layout="mono")
            f.sample_rate, f.pts = sr, s
            for p in a.encode(f):
                c.mux(p)
        for stream in (v, a):
            for p in stream.encode():
                c.mux(p)
    table = pd.DataFrame({"file": [str(src)], "frame": [0], "face_detected": [0]})
    out, = annotate(table, tmp_path / "out")
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == n
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        seconds = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].sample_rate
    assert seconds == pytest.approx(n / fps, abs=0.1)
