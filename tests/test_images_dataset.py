"""Image decoding, missing-image checks, FaceDataset and the packed uint8 cache."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from affectkit.data.abaw import read_mtl_annotations
from affectkit.data.dataset import FaceDataset, PackedImages, pack_images, resize_square
from affectkit.data.errors import CorruptImageError, DataError, MissingImagesError
from affectkit.data.folders import read_csv_labels
from affectkit.data.images import decode_rgb, drop_missing, find_missing, read_rgb
from affectkit.data.table import FaceTable, make_table_frame

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def rgb_array(h=20, w=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)
    return path


def as_hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


# --- decoding -------------------------------------------------------------------------------
def test_read_rgb_grayscale_png(tmp_path):
    gray = rgb_array()[..., 0]
    t = read_rgb(save(Image.fromarray(gray, "L"), tmp_path / "g.png"))
    assert t.shape == (3, 20, 30)
    np.testing.assert_array_equal(as_hwc(t), np.repeat(gray[..., None], 3, 2))


def test_read_rgb_grayscale_jpeg(tmp_path):
    gray = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    t = read_rgb(save(Image.fromarray(gray, "L"), tmp_path / "g.jpg", quality=95))
    assert t.shape == (3, 16, 32)
    assert (t[0] == t[1]).all() and (t[1] == t[2]).all()
    assert np.abs(t[0].numpy().astype(int) - gray).max() <= 8


def test_read_rgb_rgba_png_drops_alpha(tmp_path):
    rgb = rgb_array()
    alpha = np.full((20, 30, 1), 7, np.uint8)
    t = read_rgb(save(Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(as_hwc(t), rgb)


def test_read_rgb_palette_png(tmp_path):
    im = Image.fromarray(rgb_array()).convert("P")
    t = read_rgb(save(im, tmp_path / "p.png"))
    np.testing.assert_array_equal(as_hwc(t), np.asarray(im.convert("RGB")))


def test_read_rgb_bilevel_png(tmp_path):
    im = Image.fromarray(rgb_array()[..., 0] > 128)
    t = read_rgb(save(im, tmp_path / "b.png"))
    np.testing.assert_array_equal(as_hwc(t), np.asarray(im.convert("RGB")))


def test_read_rgb_cmyk_jpeg(tmp_path):
    im = Image.fromarray(rgb_array()).convert("CMYK")
    path = save(im, tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    t = read_rgb(path)
    assert t.shape == (3, 20, 30)
    ref = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(as_hwc(t).astype(int) - ref).max() <= 2


def test_decode_rgb_bytes_equals_read_rgb(tmp_path):
    path = save(Image.fromarray(rgb_array()), tmp_path / "x.png")
    assert torch.equal(decode_rgb(path.read_bytes()), read_rgb(path))


def test_decode_rgb_16bit_png_is_uint8(tmp_path):
    gray8 = rgb_array()[..., 0]
    im16 = Image.fromarray(gray8.astype(np.uint16) * 257)  # mode I;16
    t = read_rgb(save(im16, tmp_path / "deep.png"))
    assert t.dtype == torch.uint8
    np.testing.assert_array_equal(t[0].numpy(), gray8)


def test_pack_of_16bit_png_is_not_corrupt(tmp_path):
    gray8 = rgb_array(16, 16)[..., 0]
    save(Image.fromarray(gray8.astype(np.uint16) * 257), tmp_path / "img" / "v" / "00001.png")
    save(Image.fromarray(gray8), tmp_path / "img" / "v" / "00002.png")
    table = FaceTable(make_table_frame(["v/00001.png", "v/00002.png"]), tmp_path / "img")
    pack = pack_images(table, tmp_path / "pack", size=16)
    np.testing.assert_array_equal(pack.array[0, :, :, 0], gray8)
    np.testing.assert_array_equal(pack.array[1, :, :, 0], gray8)


def test_decode_rgb_animated_gif_is_one_frame():
    frames = [Image.fromarray(rgb_array(seed=s)) for s in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_rgb(buf.getvalue()).shape == (3, 20, 30)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_array(64, 64)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("content", [
    pytest.param(bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8)),
                 id="random-bytes"),
    pytest.param(_jpeg_bytes()[: len(_jpeg_bytes()) // 2], id="truncated-jpeg-half"),
    pytest.param(_jpeg_bytes()[:200], id="truncated-jpeg-header"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png-signature-only"),
])
def test_corrupt_image_names_path(tmp_path, content):
    path = tmp_path / "video" / "00001.jpg"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(CorruptImageError) as info:
        read_rgb(path)
    assert isinstance(info.value, DataError)
    assert str(info.value).startswith(f"{path}: cannot decode image")
    assert info.value.path == path


def test_read_rgb_missing_file(tmp_path):
    with pytest.raises(MissingImagesError) as info:
        read_rgb(tmp_path / "nope.jpg")
    assert str(tmp_path / "nope.jpg") in str(info.value)
    assert info.value.missing == [str(tmp_path / "nope.jpg")]


def test_fer2013_grayscale_jpegs_from_zip(shared_data):
    """A few real FER2013 images, decoded straight from the archive (no extraction)."""
    with zipfile.ZipFile(shared_data / "fer2013" / "test.zip") as z:
        names = [n for n in z.namelist() if n.endswith(".jpg")][:5]
        assert names
        for name in names:
            t = decode_rgb(z.read(name), name)
            assert t.shape == (3, 48, 48) and t.dtype == torch.uint8
            assert (t[0] == t[1]).all() and (t[0] == t[2]).all()
            assert t.float().std() > 5  # a face, not a blank


def test_ckplus_png_reads(shared_data):
    table = read_csv_labels(shared_data / "ckplus48" / "labels.csv")
    t = read_rgb(table.image_root / table.images[0])
    assert t.shape == (3, 48, 48) and t.dtype == torch.uint8


# --- missing images -------------------------------------------------------------------------
def table_with_files(root: Path, present, absent) -> FaceTable:
    for name in present:
        save(Image.new("RGB", (8, 8), (10, 20, 30)), root / name)
    return FaceTable(make_table_frame([*present, *absent]), root, source="list.txt")


def test_find_missing(tmp_path):
    table = table_with_files(tmp_path, ["a/00001.jpg", "a/00002.jpg", "top.jpg"],
                             ["a/00003.jpg", "nodir/00001.jpg", "a/00001.jpg/x.jpg"])
    assert find_missing(table) == ["a/00003.jpg", "nodir/00001.jpg", "a/00001.jpg/x.jpg"]
    assert find_missing(FaceTable(make_table_frame(["x.jpg"]), None)) == []


def test_drop_missing_error_lists_count_and_examples(tmp_path):
    absent = [f"v/{i:05d}.jpg" for i in range(1, 8)]
    table = table_with_files(tmp_path, ["v/00100.jpg"], absent)
    with pytest.raises(MissingImagesError) as info:
        drop_missing(table)
    msg = str(info.value)
    assert msg.startswith("list.txt: 7 image(s) missing under")
    assert str(tmp_path) in msg
    assert "v/00001.jpg, v/00002.jpg, v/00003.jpg, v/00004.jpg, v/00005.jpg ..." in msg
    assert "v/00006.jpg" not in msg
    assert "skip" in msg
    assert info.value.missing == absent


def test_drop_missing_skip_drops_and_counts(tmp_path):
    table = table_with_files(tmp_path, ["v/00001.jpg", "v/00003.jpg"], ["v/00002.jpg"])
    table.df["expression"] = [1, 3, 2]  # rows: v/00001, v/00003, then the absent v/00002
    out = drop_missing(table, "skip")
    assert out.images == ["v/00001.jpg", "v/00003.jpg"]
    assert out.expression.tolist() == [1, 3]
    assert out.skipped == {"missing images": 1}
    assert table.skipped == {} and len(table) == 3  # the input is left alone
    assert drop_missing(out, "skip") is out  # nothing more to drop
    with pytest.raises(ValueError, match="'error' or 'skip'"):
        drop_missing(table, "ignore")


# --- FaceDataset ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def val_table(sample) -> FaceTable:
    return read_mtl_annotations(sample["val"])


def test_face_dataset_items(val_table):
    ds = FaceDataset(val_table)
    assert len(ds) == len(val_table) > 0
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert set(item) == {"image", "va", "expression", "au", "index"}
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 112, 112)
        assert torch.equal(item["image"], read_rgb(val_table.image_root / val_table.images[i]))
        assert item["va"].dtype == torch.float32 and item["va"].shape == (2,)
        assert item["expression"].dtype == torch.int64 and item["expression"].shape == ()
        assert item["au"].dtype == torch.float32 and item["au"].shape == (12,)
        assert item["index"] == i
        np.testing.assert_array_equal(item["va"].numpy(), val_table.va[i])
        assert item["expression"].item() == val_table.expression[i]
        np.testing.assert_array_equal(item["au"].numpy(), val_table.au[i])


def test_face_dataset_transform(val_table):
    ds = FaceDataset(val_table, transform=lambda x: x.float().mean((1, 2)))
    item = ds[0]
    assert item["image"].shape == (3,)
    assert item["image"].dtype == torch.float32


def test_face_dataset_missing_images(val_table, tmp_path):
    extra = FaceTable(make_table_frame([*val_table.images, "ghost/00001.jpg"]),
                      val_table.image_root)
    with pytest.raises(MissingImagesError, match="ghost/00001.jpg"):
        FaceDataset(extra)
    ds = FaceDataset(extra, missing="skip")
    assert len(ds) == len(val_table)
    assert ds.table.skipped["missing images"] == 1


def test_face_dataset_dataloader(val_table):
    loader = DataLoader(FaceDataset(val_table), batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 112, 112) and batch["image"].dtype == torch.uint8
    assert batch["va"].shape == (4, 2) and batch["va"].dtype == torch.float32
    assert batch["expression"].shape == (4,) and batch["expression"].dtype == torch.int64
    assert batch["au"].shape == (4, 12)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert sum(len(b["index"]) for b in loader) == len(val_table)


# --- packed cache ---------------------------------------------------------------------------
def test_pack_round_trip_112(val_table, tmp_path):
    calls = []
    pack = pack_images(val_table, tmp_path / "val_pack", size=112, progress=calls.append)
    assert calls == list(range(len(val_table)))
    assert (tmp_path / "val_pack.npy").is_file() and (tmp_path / "val_pack.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_pack.json", "val_pack.npy"]
    meta = json.loads((tmp_path / "val_pack.json").read_text())
    assert meta["format"] == "affectkit-packed-v1" and meta["size"] == 112
    assert pack.images == val_table.images and len(pack) == len(val_table)
    assert pack.array.shape == (len(val_table), 112, 112, 3) and pack.array.dtype == np.uint8
    for i, image in enumerate(val_table.images):
        assert torch.equal(pack.get(i), read_rgb(val_table.image_root / image))
    batch = pack.get(np.array([2, 0]))
    assert batch.shape == (2, 3, 112, 112)
    assert torch.equal(batch[1], pack.get(0))
    # reopening from disk gives the same
    again = PackedImages(tmp_path / "val_pack")
    assert torch.equal(again.get(1), pack.get(1))


def test_pack_resizes(tmp_path):
    root = tmp_path / "img"
    save(Image.fromarray(rgb_array(40, 60, seed=1)), root / "v" / "00001.png")
    save(Image.fromarray(rgb_array(32, 32, seed=2)), root / "v" / "00002.png")
    table = FaceTable(make_table_frame(["v/00001.png", "v/00002.png"]), root)
    pack = pack_images(table, tmp_path / "p.npy", size=32)
    assert pack.array.shape == (2, 32, 32, 3)
    for i, image in enumerate(table.images):
        assert torch.equal(pack.get(i), resize_square(read_rgb(root / image), 32))
    assert torch.equal(pack.get(1), read_rgb(root / "v" / "00002.png"))  # already 32 px
    # a smooth image keeps its content when resized
    smooth = np.tile(np.linspace(0, 255, 64)[None, :, None], (64, 1, 3)).astype(np.uint8)
    save(Image.fromarray(smooth), root / "s" / "00001.png")
    small = resize_square(read_rgb(root / "s" / "00001.png"), 16)
    assert small.dtype == torch.uint8 and small.shape == (3, 16, 16)
    assert (small[0, 0].diff() > 0).all()


def test_pack_refuses_missing_images(val_table, tmp_path):
    table = FaceTable(make_table_frame([val_table.images[0], "ghost/00001.jpg"]),
                      val_table.image_root)
    with pytest.raises(MissingImagesError):
        pack_images(table, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_packed_dataset_same_as_decoded(val_table, tmp_path):
    pack = pack_images(val_table, tmp_path / "p")
    # the pack's rows need not be in table order: pack a shuffled copy
    shuffled = val_table.subset(np.random.default_rng(0).permutation(len(val_table)))
    other = pack_images(shuffled, tmp_path / "q")
    plain, packed, reordered = (FaceDataset(val_table), FaceDataset(val_table, packed=pack),
                                FaceDataset(val_table, packed=other))
    for i in range(len(plain)):
        a, b, c = plain[i], packed[i], reordered[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
        for key in ("va", "expression", "au"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    batch = next(iter(DataLoader(packed, batch_size=3)))
    assert batch["image"].shape == (3, 3, 112, 112) and batch["image"].dtype == torch.uint8


def test_packed_errors(val_table, tmp_path):
    pack_images(val_table.subset([0, 1]), tmp_path / "p")
    # image not in the pack
    pack = PackedImages(tmp_path / "p")
    with pytest.raises(DataError, match="1 image\\(s\\) not in the pack") as info:
        FaceDataset(val_table.subset([0, 1, 2]), packed=pack)
    assert val_table.images[2] in str(info.value)
    # shape that does not match the index
    np.save(tmp_path / "p.npy", np.zeros((3, 112, 112, 3), np.uint8))
    with pytest.raises(DataError, match="does not match its index") as info:
        PackedImages(tmp_path / "p")
    assert str(tmp_path / "p.npy") in str(info.value)
    np.save(tmp_path / "p.npy", np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(DataError, match="does not match"):
        PackedImages(tmp_path / "p")
    # not an affectkit index
    (tmp_path / "p.json").write_text(json.dumps({"format": "other", "images": [], "size": 1}))
    with pytest.raises(DataError, match="not an affectkit pack"):
        PackedImages(tmp_path / "p")
    # missing index
    (tmp_path / "p.json").unlink()
    with pytest.raises(DataError, match="packed index missing") as info:
        PackedImages(tmp_path / "p.npy")
    assert str(tmp_path / "p.json") in str(info.value)
