"""Readers: MTL files, test lists, per-video folders, class folders (LSD), generic CSVs.

Every malformed-input test asserts that the ``DataError`` says ``path:LINE`` and
names the offending column or value.
"""

import csv
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectkit.data.abaw import (
    MTL_COLUMNS,
    read_image_list,
    read_lsd,
    read_mtl_annotations,
    read_per_video,
    read_task_file,
)
from affectkit.data.errors import DataError
from affectkit.data.folders import extract_archives, read_class_folders, read_csv_labels
from affectkit.data.images import find_missing
from affectkit.data.table import FaceTable, make_table_frame
from affectkit.labels import (
    ABAW_AU,
    ABAW_EXPR,
    CKPLUS,
    CKPLUS_AU,
    FER2013,
    LSD,
    canonical_expression,
)

HEADER = ",".join(MTL_COLUMNS)
VA_HEADER = "valence,arousal"
EXPR_HEADER = ",".join(ABAW_EXPR.classes)
AU_HEADER = ",".join(ABAW_AU.classes)


def data_error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value


def assert_located(err: DataError, path: Path, line: int | None, *fragments: str) -> None:
    text = str(err)
    where = f"{path}:{line}" if line is not None else str(path)
    assert text.startswith(where + ":"), text
    assert err.line == line
    for frag in fragments:
        assert frag in text, f"{frag!r} not in {text!r}"


def mtl_row(image, v="0.1", a="-0.2", e="3", au=("0",) * 12) -> str:
    return ",".join([image, str(v), str(a), str(e), *map(str, au)])


def write_lines(path: Path, lines, end="\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(end.join(lines) + end)
    return path


def good_mtl_lines():
    return [HEADER,
            mtl_row("v1/00001.jpg", 0.5, -0.25, 4, [1, 0, -1, 0, 1, 0, 0, 0, 1, 1, 0, -1]),
            mtl_row("v1/00005.jpg", -5, -5, -1),
            mtl_row("v2/00003.jpg", -1, 1, 7, [-1] * 12)]


# --- MTL annotations ------------------------------------------------------------------------
def parse_mtl_independently(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(MTL_COLUMNS)
    return rows[1:]


def test_mtl_round_trip_on_sample(sample):
    table = read_mtl_annotations(sample["train"])
    rows = parse_mtl_independently(sample["train"])
    assert len(table) == len(rows) > 0
    assert table.images == [r[0] for r in rows]  # file order kept
    np.testing.assert_allclose(table.va, np.array([r[1:3] for r in rows], float), atol=1e-6)
    np.testing.assert_array_equal(table.expression, [int(r[3]) for r in rows])
    np.testing.assert_array_equal(table.au, np.array([r[4:] for r in rows], int))
    assert table.df["video"].tolist() == [r[0].split("/")[0] for r in rows]
    assert table.df["frame"].tolist() == [int(r[0].split("/")[1][:5]) for r in rows]
    assert table.expr_labels is ABAW_EXPR and table.au_labels is ABAW_AU
    assert table.image_root == sample["root"] / "cropped_aligned"
    assert find_missing(table) == []
    # the sample has unlabelled tasks on some rows: masks see them
    masks = table.masks()
    assert not masks["va"].all() or not masks["expression"].all() or not masks["au"].all()
    np.testing.assert_array_equal(masks["va"], table.va[:, 0] != -5)


def test_mtl_videos_sorted_by_frame_with_prefix_names(sample):
    table = read_mtl_annotations(sample["train"])
    videos = table.videos()
    assert "140" in videos and "140-30-632x360" in videos
    for name, rows in videos.items():
        assert (table.df["video"].to_numpy()[rows] == name).all()
        frames = table.df["frame"].to_numpy()[rows]
        assert (np.diff(frames) > 0).all()
    assert sum(len(r) for r in videos.values()) == len(table)


def test_mtl_values_and_sentinels(tmp_path):
    table = read_mtl_annotations(write_lines(tmp_path / "a.txt", good_mtl_lines()),
                                 image_root=tmp_path / "imgs")
    assert table.image_root == tmp_path / "imgs"
    np.testing.assert_allclose(table.va, [[0.5, -0.25], [-5, -5], [-1, 1]])
    np.testing.assert_array_equal(table.expression, [4, -1, 7])
    assert table.au[0].tolist() == [1, 0, -1, 0, 1, 0, 0, 0, 1, 1, 0, -1]
    assert table.masks()["va"].tolist() == [True, False, True]
    assert table.masks()["expression"].tolist() == [True, False, True]
    assert table.df["frame"].tolist() == [1, 5, 3]


def test_mtl_bom_crlf_and_blank_lines_tolerated(tmp_path):
    plain = read_mtl_annotations(write_lines(tmp_path / "plain.txt", good_mtl_lines()))
    lines = good_mtl_lines()
    text = "\ufeff" + "\r\n".join([lines[0], lines[1], "", lines[2], lines[3], "", "  ", ""])
    p = tmp_path / "bom.txt"
    p.write_bytes(text.encode("utf-8"))
    other = read_mtl_annotations(p)
    assert other.images == plain.images
    np.testing.assert_array_equal(other.va, plain.va)
    np.testing.assert_array_equal(other.expression, plain.expression)
    np.testing.assert_array_equal(other.au, plain.au)


def test_mtl_header_case_insensitive(tmp_path):
    lines = good_mtl_lines()
    lines[0] = lines[0].upper()
    assert len(read_mtl_annotations(write_lines(tmp_path / "a.txt", lines))) == 3


@pytest.mark.parametrize("header", [
    HEADER.replace("valence", "val"),
    HEADER.replace(",AU26", ""),
    ",".join(["image", "arousal", "valence", *MTL_COLUMNS[3:]]),
    mtl_row("v1/00001.jpg"),  # no header at all
])
def test_mtl_wrong_header(tmp_path, header):
    lines = good_mtl_lines()
    lines[0] = header
    p = write_lines(tmp_path / "a.txt", lines)
    assert_located(data_error(read_mtl_annotations, p), p, 1, "expected header", repr(header))


def test_mtl_header_after_blank_line_is_located(tmp_path):
    p = write_lines(tmp_path / "a.txt", ["", "image,v,a"])
    assert_located(data_error(read_mtl_annotations, p), p, 2, "expected header")


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\ufeff"])
def test_mtl_empty_file(tmp_path, content):
    p = tmp_path / "a.txt"
    p.write_text(content, encoding="utf-8")
    assert_located(data_error(read_mtl_annotations, p), p, None, "empty file")


def test_mtl_missing_file(tmp_path):
    p = tmp_path / "nope.txt"
    assert_located(data_error(read_mtl_annotations, p), p, None, "file not found")


def test_mtl_header_only_is_an_empty_table(tmp_path):
    table = read_mtl_annotations(write_lines(tmp_path / "a.txt", [HEADER]))
    assert len(table) == 0


def _bad(lines, lineno, replacement):
    out = list(lines)
    out[lineno - 1] = replacement
    return out


@pytest.mark.parametrize("line,fragments", [
    (mtl_row("v1/00009.jpg")[: -2], ("expected 16 comma-separated values", "got 15")),
    (mtl_row("v1/00009.jpg") + ",0", ("expected 16", "got 17")),
    (mtl_row("v1/00009.jpg", a="abc"), ("arousal", "'abc'", "not a number")),
    (mtl_row("v1/00009.jpg", v="nan"), ("valence", "'nan'", "not finite")),
    (mtl_row("v1/00009.jpg", v=1.5), ("valence = 1.5", "outside [-1, 1]")),
    (mtl_row("v1/00009.jpg", a=-1.01), ("arousal = -1.01", "outside [-1, 1]")),
    (mtl_row("v1/00009.jpg", v=-4), ("valence = -4",)),
    (mtl_row("v1/00009.jpg", e=8), ("expression = 8", "[-1, 7]")),
    (mtl_row("v1/00009.jpg", e=2.5), ("expression = 2.5",)),
    (mtl_row("v1/00009.jpg", e=-2), ("expression = -2",)),
    (mtl_row("v1/00009.jpg", e="happy"), ("expression", "'happy'", "not a number")),
    (mtl_row("v1/00009.jpg", au=[0] * 5 + [2] + [0] * 6), ("AU10 = 2", "[-1, 1]")),
    (mtl_row("v1/00009.jpg", au=[0] * 11 + [0.5]), ("AU26 = 0.5",)),
    (mtl_row(" "), ("empty image name",)),
])
def test_mtl_malformed_line_is_located(tmp_path, line, fragments):
    lines = good_mtl_lines() + [mtl_row("v3/00001.jpg")]
    lines = _bad(lines, 4, line)  # line 4 of the file, 3rd data row
    p = write_lines(tmp_path / "a.txt", lines)
    assert_located(data_error(read_mtl_annotations, p), p, 4, *fragments)


def test_mtl_line_numbers_count_blank_lines(tmp_path):
    lines = good_mtl_lines()
    lines = lines[:2] + ["", ""] + lines[2:] + [mtl_row("v1/00009.jpg", e=9)]
    p = write_lines(tmp_path / "a.txt", lines)
    assert_located(data_error(read_mtl_annotations, p), p, 7, "expression = 9")


def test_mtl_sentinel_va_accepted(tmp_path):
    lines = [HEADER, mtl_row("a/00001.jpg", -5, -5), mtl_row("a/00002.jpg", "-5.0", "-5.0")]
    table = read_mtl_annotations(write_lines(tmp_path / "a.txt", lines))
    assert not table.masks()["va"].any()


def test_mtl_duplicate_image_names_both_lines(tmp_path):
    lines = good_mtl_lines() + [mtl_row("v1/00001.jpg", e=1)]
    p = write_lines(tmp_path / "a.txt", lines)
    assert_located(data_error(read_mtl_annotations, p), p, 5, "duplicate image 'v1/00001.jpg'",
                   "first on line 2")


# --- test lists -----------------------------------------------------------------------------
def test_image_list_from_sample(sample):
    table = read_image_list(sample["test"])
    names = [s for s in sample["test"].read_text().splitlines() if s]
    assert table.images == names  # challenge order
    assert (table.expression == -1).all() and (table.au == -1).all()
    assert not table.masks()["va"].any()
    assert table.image_root == sample["root"] / "cropped_aligned"
    assert find_missing(table) == []


def test_image_list_with_header_and_extra_fields(tmp_path):
    p = write_lines(tmp_path / "list.txt",
                    ["image,valence", "b/00002.jpg,0.1", "", "a/00001.jpg", "b/00010.jpg,x"])
    table = read_image_list(p, image_root=tmp_path)
    assert table.images == ["b/00002.jpg", "a/00001.jpg", "b/00010.jpg"]
    assert table.df["video"].tolist() == ["b", "a", "b"]
    assert table.df["frame"].tolist() == [2, 1, 10]
    assert table.image_root == tmp_path


def test_image_list_without_header(tmp_path):
    p = write_lines(tmp_path / "list.txt", ["b/00002.jpg", "a/00001.jpg"], end="\r\n")
    assert read_image_list(p).images == ["b/00002.jpg", "a/00001.jpg"]


def test_image_list_duplicates(tmp_path):
    p = write_lines(tmp_path / "list.txt", ["image", "a/00001.jpg", "b/00001.jpg", "a/00001.jpg"])
    assert_located(data_error(read_image_list, p), p, 4, "duplicate image 'a/00001.jpg'",
                   "first on line 2")


# --- per-video folders ----------------------------------------------------------------------
TASK_DIRS = {"VA": "VA_Estimation_Challenge", "EXPR": "EXPR_Classification_Challenge",
             "AU": "AU_Detection_Challenge"}


def write_task(root: Path, task: str, video: str, lines, split="Train_Set", folder=None) -> Path:
    return write_lines(root / (folder or TASK_DIRS[task]) / split / f"{video}.txt", lines)


def touch_crops(crops: Path, video: str, frames) -> None:
    (crops / video).mkdir(parents=True, exist_ok=True)
    for f in frames:
        (crops / video / f"{f:05d}.jpg").write_bytes(b"")


def test_per_video_on_sample_matches_files(sample):
    root = sample["root"]
    table = read_per_video(root, root / "cropped_aligned", "train")
    ann = root / "Annotations"
    expected_skipped = 0
    for video, rows in table.videos().items():
        va_lines = (ann / TASK_DIRS["VA"] / "Train_Set" / f"{video}.txt").read_text().split()
        ex_lines = (ann / TASK_DIRS["EXPR"] / "Train_Set" / f"{video}.txt").read_text().split()
        au_lines = (ann / TASK_DIRS["AU"] / "Train_Set" / f"{video}.txt").read_text().split()
        crops = {int(n[:5]) for n in os.listdir(root / "cropped_aligned" / video)}
        n = len(va_lines) - 1
        expected_skipped += sum(f not in crops for f in range(1, n + 1))
        frames = table.df["frame"].to_numpy()[rows]
        assert frames.tolist() == sorted(crops & set(range(1, n + 1)))
        for row, f in zip(rows, frames):
            # line i after the header is frame i (1-based)
            v, a = map(float, va_lines[f].split(","))
            assert table.va[row].tolist() == pytest.approx([v, a], abs=1e-6)
            assert table.expression[row] == int(ex_lines[f])
            assert table.au[row].tolist() == [int(x) for x in au_lines[f].split(",")]
            assert table.images[row] == f"{video}/{f:05d}.jpg"
    assert table.skipped["annotated frames without a face crop"] == expected_skipped > 0
    assert set(table.videos()) == {"140", "140-30-632x360", "132-30-426x240",
                                   "10-60-1280x720_right", "22-30-1920x1080"}
    assert find_missing(table) == []
    assert "train" in table.source


def test_per_video_val_split_and_annotations_subfolder(sample):
    root = sample["root"]
    # passing the Annotations folder itself works as well as its parent
    a = read_per_video(root / "Annotations", root / "cropped_aligned", "val")
    b = read_per_video(root, root / "cropped_aligned", "Validation_Set")
    assert set(a.videos()) == {"video5", "video9_left"}
    assert a.images == b.images


def test_per_video_merge_skip_and_sentinels(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    write_task(ann, "VA", "vidA", [VA_HEADER, "0.1,0.2", "0.3,0.4", "0.5,0.6", "-5,-5",
                                   "0.9,-0.9", "-5,-5"])
    # the 'Recognition' folder name of some releases; shorter than the VA file
    write_task(ann, "EXPR", "vidA", [EXPR_HEADER, "1", "2", "3", "4"],
               folder="EXPR_Recognition_Challenge")
    write_task(ann, "AU", "vidB", [AU_HEADER, ",".join(["1"] * 12), ",".join(["0"] * 12)])
    touch_crops(crops, "vidA", [1, 2, 4, 5, 6, 9])  # frame 3 has no crop; 9 has no labels
    touch_crops(crops, "vidB", [2])
    (crops / "vidA" / "notes.txt").write_text("not a frame")

    table = read_per_video(ann, crops, "train")
    df = table.df
    assert df["video"].tolist() == ["vidA"] * 4 + ["vidB"]
    assert df["frame"].tolist() == [1, 2, 4, 5, 2]
    assert table.images == ["vidA/00001.jpg", "vidA/00002.jpg", "vidA/00004.jpg",
                            "vidA/00005.jpg", "vidB/00002.jpg"]
    np.testing.assert_allclose(table.va, [[0.1, 0.2], [0.3, 0.4], [-5, -5], [0.9, -0.9],
                                          [-5, -5]], atol=1e-6)
    # frame 5 is labelled for VA only: expression and every AU carry the sentinel
    assert table.expression.tolist() == [1, 2, 4, -1, -1]
    assert (table.au[:4] == -1).all()
    assert table.au[4].tolist() == [0] * 12
    assert table.skipped == {"annotated frames without a face crop": 2,  # vidA 3, vidB 1
                             "videos without a crop folder": 0,
                             "frames with no valid label": 1}  # vidA frame 6
    assert "EXPR" in table.source and "AU" in table.source


def test_per_video_keep_unlabelled(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    write_task(ann, "VA", "v", [VA_HEADER, "-5,-5", "0.1,0.1"])
    touch_crops(crops, "v", [1, 2])
    assert read_per_video(ann, crops).df["frame"].tolist() == [2]
    kept = read_per_video(ann, crops, keep_unlabelled=True)
    assert kept.df["frame"].tolist() == [1, 2]
    assert kept.masks()["va"].tolist() == [False, True]


def test_per_video_video_without_crop_folder(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    write_task(ann, "VA", "gone", [VA_HEADER, "0.1,0.1", "0.2,0.2"])
    write_task(ann, "VA", "here", [VA_HEADER, "0.1,0.1"])
    touch_crops(crops, "here", [1])
    table = read_per_video(ann, crops, tasks=("VA",))
    assert table.images == ["here/00001.jpg"]
    assert table.skipped["videos without a crop folder"] == 1
    assert table.skipped["annotated frames without a face crop"] == 2


def test_per_video_prefix_names_kept_apart_with_gaps(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    write_task(ann, "VA", "140", [VA_HEADER, *[f"0.{i},0.{i}" for i in range(10)]])
    write_task(ann, "VA", "140-30-632x360", [VA_HEADER, *["-0.5,0.5"] * 12])
    touch_crops(crops, "140", [9, 1, 5, 2])
    touch_crops(crops, "140-30-632x360", [3, 12, 4])
    table = read_per_video(ann, crops, tasks=("VA",))
    videos = table.videos()
    assert sorted(videos) == ["140", "140-30-632x360"]
    frames = table.df["frame"].to_numpy()
    assert frames[videos["140"]].tolist() == [1, 2, 5, 9]
    assert frames[videos["140-30-632x360"]].tolist() == [3, 4, 12]
    # line i = frame i: frame 5 of '140' is the 5th value line, 0.4
    row5 = videos["140"][2]
    assert table.va[row5].tolist() == pytest.approx([0.4, 0.4])
    assert all(table.images[r].startswith("140/") for r in videos["140"])


def test_videos_on_shuffled_rows_keeps_gaps(tmp_path):
    lines = [HEADER] + [mtl_row(f"{v}/{f:05d}.jpg") for v, f in
                        [("140-30-632x360", 7), ("140", 30), ("140", 2), ("140-30-632x360", 1),
                         ("140", 11)]]
    table = read_mtl_annotations(write_lines(tmp_path / "a.txt", lines))
    videos = table.videos()
    assert videos["140"].tolist() == [2, 4, 1]
    assert table.df["frame"].to_numpy()[videos["140"]].tolist() == [2, 11, 30]
    assert videos["140-30-632x360"].tolist() == [3, 0]


def test_videos_of_empty_table():
    assert FaceTable(make_table_frame([]), None).videos() == {}


def test_task_file_au_header_reordered(tmp_path):
    order = list(reversed(ABAW_AU.classes))
    au = np.array([[1, 0, -1, 0, 1, 1, 0, 0, 1, -1, 0, 1], [0] * 11 + [1]])
    body = [",".join(map(str, row[::-1])) for row in au]  # file columns in reversed order
    p = write_lines(tmp_path / "v.txt", [",".join(order), *body])
    np.testing.assert_array_equal(read_task_file(p, "AU"), au)
    # OpenFace-style spellings of the AU names are accepted as well
    p2 = write_lines(tmp_path / "w.txt", [",".join(f"AU{int(c[2:]):02d}_c" for c in order),
                                          *body])
    np.testing.assert_array_equal(read_task_file(p2, "AU"), au)


def test_per_video_reorders_au_columns(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    order = [ABAW_AU.classes[j] for j in (11, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    write_task(ann, "AU", "v", [",".join(order), "1,0,0,0,0,0,0,0,0,0,0,0"])
    touch_crops(crops, "v", [1])
    assert read_per_video(ann, crops).au[0].tolist() == [0] * 11 + [1]  # AU26 is last in ABAW


def test_task_file_values(tmp_path):
    va = read_task_file(write_lines(tmp_path / "va.txt", [VA_HEADER, "0.25,-1", "-5,-5"]), "VA")
    assert va.dtype == np.float32 and va.tolist() == [[0.25, -1], [-5, -5]]
    ex = read_task_file(write_lines(tmp_path / "ex.txt", [EXPR_HEADER, "7", "-1", "0"]), "EXPR")
    assert ex.dtype == np.int64 and ex.tolist() == [7, -1, 0]


@pytest.mark.parametrize("task,header", [
    ("VA", "arousal,valence"),
    ("VA", "valence"),
    ("EXPR", ",".join(reversed(ABAW_EXPR.classes))),
    ("EXPR", "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"),
    ("AU", AU_HEADER.replace(",AU26", "")),
    ("AU", AU_HEADER.replace("AU26", "AU1")),
    ("AU", AU_HEADER.replace("AU26", "smile")),
])
def test_task_file_bad_header(tmp_path, task, header):
    p = write_lines(tmp_path / "v.txt", [header, "0"])
    assert_located(data_error(read_task_file, p, task), p, 1, f"expected {task} header",
                   repr(header))


@pytest.mark.parametrize("task,lines,line,fragments", [
    ("VA", [VA_HEADER, "0.1,0.1", "0.2,0.2", "0.3"], 4, ("expected 2", "got 1")),
    ("VA", [VA_HEADER, "0.1,0.1", "1.5,0.2"], 3, ("valence = 1.5",)),
    ("VA", [VA_HEADER, "0.1,x"], 2, ("arousal", "'x'")),
    ("EXPR", [EXPR_HEADER, "0", "1", "8"], 4, ("expression = 8",)),
    ("EXPR", [EXPR_HEADER, "1.5"], 2, ("expression = 1.5",)),
    ("AU", [AU_HEADER, ",".join(["0"] * 11 + ["2"])], 2, ("AU26 = 2",)),
    ("VA", [VA_HEADER, "0.1,0.1", "", "0.2,0.2"], 3, ("blank line inside the file",)),
])
def test_task_file_malformed_line(tmp_path, task, lines, line, fragments):
    p = write_lines(tmp_path / "v.txt", lines)
    assert_located(data_error(read_task_file, p, task), p, line, *fragments)


def test_task_file_trailing_blank_lines_and_crlf(tmp_path):
    p = tmp_path / "v.txt"
    p.write_bytes(b"\xef\xbb\xbfvalence,arousal\r\n0.1,0.2\r\n0.3,0.4\r\n\r\n\r\n")
    np.testing.assert_allclose(read_task_file(p, "VA"), [[0.1, 0.2], [0.3, 0.4]], atol=1e-6)


def test_task_file_empty(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("")
    assert_located(data_error(read_task_file, p, "VA"), p, None, "empty file")


def test_task_file_header_only(tmp_path):
    p = write_lines(tmp_path / "v.txt", [VA_HEADER])
    assert read_task_file(p, "VA").shape == (0, 2)


def test_per_video_error_propagates_location(tmp_path):
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    p = write_task(ann, "EXPR", "v", [EXPR_HEADER, "0", "9"])
    touch_crops(crops, "v", [1, 2])
    assert_located(data_error(read_per_video, ann, crops), p, 3, "expression = 9")


def test_per_video_nothing_found(tmp_path):
    write_task(tmp_path, "VA", "v", [VA_HEADER, "0,0"])
    err = data_error(read_per_video, tmp_path, tmp_path, "val")
    assert "no per-video annotations for split 'val'" in str(err)
    assert "Validation_Set" in str(err)


# --- class folders / LSD --------------------------------------------------------------------
def tiny_png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)


LSD_FOLDERS = {"ANGERE": 1, "disgust": 2, "Fear": 3, "HAPPINESS": 1, "SADNESS": 2, "SURPRISE": 1}
LSD_INDEX = {"ANGERE": 0, "disgust": 1, "Fear": 2, "HAPPINESS": 3, "SADNESS": 4, "SURPRISE": 5}


def make_class_tree(root: Path, counts: dict[str, int]) -> Path:
    for folder, n in counts.items():
        for i in range(n):
            tiny_png(root / folder / f"img_{i}.png", 20 * i)
    return root


def test_read_lsd_matches_folders_by_name(tmp_path):
    root = make_class_tree(tmp_path / "lsd", LSD_FOLDERS)
    (root / "Fear" / "readme.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    tiny_png(root / "SADNESS" / "nested" / "deep.jpg")
    tiny_png(root / "SURPRISE" / "UPPER.PNG")
    table = read_lsd(root)
    assert table.expr_labels is LSD
    assert table.image_root == root
    assert len(table) == sum(LSD_FOLDERS.values()) + 2
    for image, e in zip(table.images, table.expression):
        folder = image.split("/")[0]
        assert e == LSD_INDEX[folder], image
    assert (table.df["frame"] == -1).all()
    assert "SADNESS/nested/deep.jpg" in table.images
    assert not any(i.endswith(".txt") for i in table.images)
    assert find_missing(table) == []
    # to ABAW by name: Anger 1, Disgust 2, Fear 3, Happiness 4, Sadness 5, Surprise 6
    abaw = table.with_expr_labels(ABAW_EXPR)
    assert sorted(set(abaw.expression.tolist())) == [1, 2, 3, 4, 5, 6]
    for image, e in zip(abaw.images, abaw.expression):
        assert e == LSD_INDEX[image.split("/")[0]] + 1


def test_read_lsd_unknown_folder(tmp_path):
    root = make_class_tree(tmp_path / "lsd", {"ANGER": 1, "NEUTRAL": 1})
    err = data_error(read_lsd, root)
    assert_located(err, root / "NEUTRAL", None, "not a class of lsd")


def test_read_lsd_two_folders_for_one_class(tmp_path):
    root = make_class_tree(tmp_path / "lsd", {"ANGER": 1, "ANGERE": 1})
    assert "second folder for class 'Anger'" in str(data_error(read_lsd, root))


def test_class_folders_errors(tmp_path):
    assert_located(data_error(read_class_folders, tmp_path / "nope"), tmp_path / "nope", None,
                   "not a directory")
    (tmp_path / "empty").mkdir()
    assert "no class folders" in str(data_error(read_class_folders, tmp_path / "empty"))
    root = make_class_tree(tmp_path / "odd", {"happy": 1, "bored": 1})
    assert "pass the label set explicitly" in str(data_error(read_class_folders, root))


@pytest.mark.parametrize("names,expected", [
    (["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"], CKPLUS),
    (["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"], FER2013),
    (["ANGER", "DISGUST", "FEAR", "HAPPINESS", "SADNESS", "SURPRISE"], LSD),
    (["Neutral", "Anger", "Other"], ABAW_EXPR),
])
def test_class_folders_infer_label_set(tmp_path, names, expected):
    root = make_class_tree(tmp_path / "c", {n: 1 for n in names})
    table = read_class_folders(root)
    assert table.expr_labels is expected
    for image, e in zip(table.images, table.expression):
        assert expected.canonical[e] == canonical_expression(image.split("/")[0])


def test_class_folders_real_ckplus(shared_data):
    table = read_class_folders(shared_data / "ckplus48" / "images")
    assert table.expr_labels is CKPLUS
    assert len(table) == 981
    with open(shared_data / "ckplus48" / "labels.csv", newline="") as f:
        truth = {r["path"].removeprefix("images/"): r["expression"] for r in csv.DictReader(f)}
    assert set(table.images) == set(truth)
    for image, e in zip(table.images, table.expression):
        assert CKPLUS.classes[e] == truth[image]


# --- generic CSV ----------------------------------------------------------------------------
def test_csv_ckplus_labels(shared_data):
    path = shared_data / "ckplus48" / "labels.csv"
    table = read_csv_labels(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(table) == len(rows) == 981
    assert table.expr_labels is CKPLUS
    assert table.image_root == path.parent
    assert find_missing(table) == []
    assert table.images == [r["path"] for r in rows]
    assert [CKPLUS.classes[e] for e in table.expression] == [r["expression"] for r in rows]
    assert table.df["subject"].tolist() == [r["subject"] for r in rows]
    assert table.df["frame"].dtype == np.int64  # the CSV's own frame column, as integers
    assert table.df["frame"].tolist() == [int(r["frame"]) for r in rows]
    assert (table.au == -1).all() and not table.masks()["va"].any()
    abaw = table.with_expr_labels(ABAW_EXPR)
    contempt = table.expression == CKPLUS.index("contempt")
    assert contempt.any() and (abaw.expression[contempt] == -1).all()
    assert (abaw.expression[table.expression == CKPLUS.index("happy")] == 4).all()


def test_csv_video_and_frame_columns(tmp_path):
    """A CSV's own ``frame`` / ``video`` columns become the table's (integers, sorted as such)."""
    p = write_lines(tmp_path / "l.csv", ["path,expression,frame,video", "s/a.png,happy,10,clip",
                                         "s/b.png,happy,9,clip", "t/c.png,sad,1,other"])
    table = read_csv_labels(p, image_root=tmp_path)
    assert table.df["frame"].dtype == np.int64
    assert table.df["video"].tolist() == ["clip", "clip", "other"]
    assert table.videos()["clip"].tolist() == [1, 0]  # frame 9 before frame 10
    bad = write_lines(tmp_path / "m.csv", ["path,frame", "a.png,1", "b.png,x2"])
    assert_located(data_error(read_csv_labels, bad, tmp_path), bad, 3, "frame", "'x2'")


def test_csv_ckplus_au_codes(shared_data):
    path = shared_data / "ckplus48" / "au_labels_from_ck_codes.csv"
    table = read_csv_labels(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(table) == len(rows) == 684
    assert table.au_labels is CKPLUS_AU
    np.testing.assert_array_equal(table.au, [[int(r[c]) for c in CKPLUS_AU.classes]
                                             for r in rows])
    assert table.masks()["au"].all()
    # expression indices point to the right names whatever set was inferred
    assert [canonical_expression(table.expr_labels.classes[e]) for e in table.expression] == \
        [canonical_expression(r["expression"]) for r in rows]
    assert table.df["facs_code"].tolist() == [r["facs_code"] for r in rows]
    # every ABAW AU is coded by CK+, so re-labelling to ABAW loses none and sets no sentinel
    abaw = table.with_au_labels(ABAW_AU)
    assert abaw.au_labels is ABAW_AU and abaw.au.shape == (684, 12)
    assert (abaw.au >= 0).all()
    for j, name in enumerate(ABAW_AU.classes):
        assert abaw.au[:, j].tolist() == [int(r[name]) for r in rows]
    assert "AU5" not in abaw.df and "AU27" not in abaw.df
    # the other way round, CK+ AUs that ABAW does not code come back as -1
    back = abaw.with_au_labels(CKPLUS_AU)
    for name in ("AU5", "AU9", "AU14", "AU16", "AU17", "AU20", "AU27"):
        assert (back.df[name] == -1).all()
    assert back.df["AU12"].tolist() == table.df["AU12"].tolist()


def test_csv_affwild2_va_sample(shared_data):
    path = shared_data / "affwild2_va_sample" / "sample_labelfile_132-30-426x240.csv"
    table = read_csv_labels(path, image_root=shared_data)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(table) == len(rows) == 992
    assert table.df["frame"].tolist() == list(range(1, 993))
    assert set(table.df["video"]) == {"132-30-426x240"}
    assert table.videos()["132-30-426x240"].tolist() == list(range(992))
    np.testing.assert_allclose(table.va, [[float(r["V"]), float(r["A"])] for r in rows],
                               atol=1e-6)
    assert ((np.abs(table.va) <= 1) | (table.va == -5)).all()
    assert (table.expression == -1).all()
    assert "frame_id" in table.df and "" not in table.df  # the unnamed index column is dropped


def test_affwild2_sample_as_per_video_file(shared_data, tmp_path):
    """The sample re-exports a per-video VA file: written back as one, it reads the same."""
    path = shared_data / "affwild2_va_sample" / "sample_labelfile_132-30-426x240.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    video = "132-30-426x240"
    ann, crops = tmp_path / "ann", tmp_path / "crops"
    write_task(ann, "VA", video, [VA_HEADER, *[f"{r['V']},{r['A']}" for r in rows]])
    touch_crops(crops, video, range(1, 993, 3))  # crops for every third frame
    table = read_per_video(ann, crops, tasks=("VA",), keep_unlabelled=True)
    direct = read_csv_labels(path, image_root=crops)
    assert table.df["frame"].tolist() == list(range(1, 993, 3))
    np.testing.assert_allclose(table.va, direct.va[::3], atol=1e-6)
    assert table.images == direct.images[::3]


def test_csv_integer_expression_needs_label_set(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["path,label", "a.png,3", "b.png,0", "c.png,-1"])
    assert_located(data_error(read_csv_labels, p, tmp_path), p, 1, "'label'", "label set")
    table = read_csv_labels(p, tmp_path, expr_labels=FER2013)
    assert table.expression.tolist() == [3, 0, -1]
    assert table.expr_labels is FER2013
    assert table.with_expr_labels(ABAW_EXPR).expression.tolist() == [4, 1, -1]


@pytest.mark.parametrize("lines,line,fragments,kwargs", [
    (["path,expression", "a.png,happy", "b.png,sad", "c.png,happpy"], 4,
     ("expression", "'happpy'"), {"expr_labels": FER2013}),
    (["path,emotion", "a.png,3", "b.png,7"], 3, ("emotion", "out of range"),
     {"expr_labels": FER2013}),
    (["path,valence,arousal", "a.png,0.1,0.2", "b.png,x,0.2"], 3, ("valence", "'x'"), {}),
    (["path,valence,arousal", "a.png,0.1,0.2", "b.png,0.1,2"], 3, ("arousal = 2",), {}),
    (["path,AU1,AU2", "a.png,0,1", "b.png,1,1", "c.png,1,2"], 4, ("AU2 = 2",), {}),
    (["path,expression", "a.png,happy", "b.png,sad,extra"], 3, ("expected 2 values",), {}),
])
def test_csv_bad_value_is_located(tmp_path, lines, line, fragments, kwargs):
    p = write_lines(tmp_path / "l.csv", lines)
    assert_located(data_error(read_csv_labels, p, tmp_path, **kwargs), p, line, *fragments)


def test_csv_unknown_name_without_label_set_is_located(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["path,expression", "a.png,happy", "b.png,happpy"])
    assert_located(data_error(read_csv_labels, p, tmp_path), p, 3, "'happpy'")


def test_csv_header_only(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["path,valence,arousal"])
    assert len(read_csv_labels(p, tmp_path)) == 0


def test_csv_explicit_au_labels_missing_columns(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["path,AU1,AU2", "a.png,0,1"])
    try:
        table = read_csv_labels(p, tmp_path, au_labels=ABAW_AU)
    except DataError as e:  # either a located error naming the absent AU ...
        assert str(p) in str(e) and "AU4" in str(e)
    else:  # ... or the absent AUs as unlabelled, like FaceTable.with_au_labels
        assert table.au[0].tolist() == [0, 1] + [-1] * 10


def test_csv_no_path_column(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["name,expression", "a.png,happy"])
    assert_located(data_error(read_csv_labels, p, tmp_path), p, 1, "no image path column")


def test_csv_split_column_and_extras(tmp_path):
    p = write_lines(tmp_path / "l.csv", [
        "\ufeffFile,Emotion,Usage,subject",
        "x/1.png,Happy,train,s1", "x/2.png,Sad,test,s2", "", "x/3.png,angry,train,s3",
        "x/4.png,neutral,val,s1"])
    table = read_csv_labels(p, tmp_path)
    assert table.expr_labels is FER2013  # smallest known set holding every name
    assert table.expression.tolist() == [3, 4, 0, 6]
    assert table.df["split"].tolist() == ["train", "test", "train", "val"]
    assert table.df["subject"].tolist() == ["s1", "s2", "s3", "s1"]
    parts = table.split()
    assert {k: len(v) for k, v in parts.items()} == {"train": 2, "test": 1, "val": 1}
    assert parts["train"].images == ["x/1.png", "x/3.png"]
    assert parts["train"].expression.tolist() == [3, 0]
    assert parts["val"].expr_labels is FER2013


def test_csv_lone_valence_column_not_silently_dropped(tmp_path):
    p = write_lines(tmp_path / "l.csv", ["path,valence", "a.png,0.5"])
    assert_located(data_error(read_csv_labels, p, tmp_path), p, 1, "arousal")


def test_csv_fer2013_labels(shared_data, tmp_path):
    """Labels and splits of the real FER2013 list (no extraction: image_root is given)."""
    path = shared_data / "fer2013" / "labels.csv"
    table = read_csv_labels(path, image_root=tmp_path)
    assert len(table) == 35887
    assert table.expr_labels is FER2013
    counts = {k: len(v) for k, v in table.split().items()}
    assert counts == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    names = [p.split("/")[1] for p in table.images]
    assert [FER2013.classes[e] for e in table.expression] == names
    abaw = table.with_expr_labels(ABAW_EXPR)
    happy = np.array(names) == "happy"
    assert (abaw.expression[happy] == 4).all()
    assert (abaw.expression >= 0).all()  # every FER2013 class has an ABAW class


def test_csv_resolves_images_from_zip_once(tmp_path, monkeypatch):
    """Images named by the CSV but only present in a zip beside it are extracted once."""
    monkeypatch.setenv("AFFECTKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    buf = io.BytesIO()
    Image.new("L", (6, 6), 77).save(buf, "JPEG")
    with zipfile.ZipFile(data / "train.zip", "w") as z:
        z.writestr("train/happy/a.jpg", buf.getvalue())
        z.writestr("train/sad/b.jpg", buf.getvalue())
    p = write_lines(data / "labels.csv", ["path,expression", "train/happy/a.jpg,happy",
                                          "train/sad/b.jpg,sad"])
    table = read_csv_labels(p)
    root = table.image_root
    assert root.is_relative_to(tmp_path / "cache")
    assert find_missing(table) == []
    stamp = (root / "train/happy/a.jpg").stat().st_mtime_ns
    again = read_csv_labels(p)
    assert again.image_root == root
    assert (root / "train/happy/a.jpg").stat().st_mtime_ns == stamp
    assert [x.name for x in root.parent.iterdir()] == [root.name]  # no leftover temp dirs


def test_csv_bad_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    p = write_lines(tmp_path / "labels.csv", ["path,expression", "x/a.jpg,happy"])
    err = data_error(read_csv_labels, p)
    assert_located(err, tmp_path / "broken.zip", None, "not a valid zip archive")
    assert not any((tmp_path / "cache" / "archives").iterdir())


def test_extract_archives_bad_member(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTKIT_CACHE", str(tmp_path / "cache"))
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../outside.txt", "x")
    err = data_error(extract_archives, [tmp_path / "evil.zip"])
    assert "escapes the archive" in str(err)
    assert not (tmp_path / "cache" / "outside.txt").exists()
    assert not any((tmp_path / "cache" / "archives").iterdir())


def test_extract_archives_concurrent_extraction(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTKIT_CACHE", str(tmp_path / "cache"))
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        z.writestr("train/a.jpg", b"jpeg")
    dest = extract_archives([tmp_path / "imgs.zip"])
    done_elsewhere = dest.rename(tmp_path / "finished_by_other_process")
    real_extractall = zipfile.ZipFile.extractall

    def extract_while_other_finishes(self, *args, **kwargs):
        real_extractall(self, *args, **kwargs)
        shutil.copytree(done_elsewhere, dest)  # the other process wins the race

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_while_other_finishes)
    assert extract_archives([tmp_path / "imgs.zip"]) == dest
    assert (dest / "train" / "a.jpg").read_bytes() == b"jpeg"
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
