"""Face detection (issue 15's foundation): MTCNN written here, on the weight files of the
facenet-pytorch wheel, checked on real faces: the AFEW-VA clip (one face per frame, 68
annotated landmarks) and CK+ faces pasted at known places and sizes into larger frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


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


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_afew_face_is_found_in_every_frame_where_its_landmarks_are(mtcnn, shared_data):
    clip = shared_data / "afew_va_clip001"
    frames = json.loads((clip / "001.json").read_text())["frames"]
    for name in sorted(frames)[::3]:
        image = np.asarray(Image.open(clip / f"{name}.png").convert("RGB"))
        faces = mtcnn.detect(image)
        assert len(faces) == 1, name
        lm = np.asarray(frames[name]["landmarks"], np.float64)  # 68 points (x, y)
        ref = np.concatenate([lm.min(0), lm.max(0)])
        assert _iou(faces[0].box, ref) > 0.5, (name, faces[0].box, ref)
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
        found += sum(any(_iou(d.box, t) > 0.4 for d in faces) for t in truth)
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
