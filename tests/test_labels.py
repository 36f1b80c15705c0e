"""Label spaces: by-name mappings, sentinels, AU name spellings, validity masks."""

import numpy as np
import pytest
import torch

from affectkit.labels import (
    ABAW_AU,
    ABAW_EXPR,
    AFFECTNET8,
    CKPLUS,
    CKPLUS_AU,
    FER2013,
    LABEL_SETS,
    LSD,
    LabelSet,
    au_valid,
    canonical_au,
    canonical_expression,
    expr_valid,
    get_label_set,
    va_valid,
)

EXPR_SETS = (ABAW_EXPR, LSD, AFFECTNET8, FER2013, CKPLUS)


def test_abaw_orders_match_the_reference():
    assert ABAW_EXPR.classes == ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness",
                                 "Surprise", "Other")
    assert [f"AU{n}" for n in (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)] == list(ABAW_AU.classes)
    assert LSD.classes == ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


@pytest.mark.parametrize("name,canon", [
    ("Happy", "happiness"), ("HAPPINESS", "happiness"), (" angry ", "anger"),
    ("ANGERE", "anger"), ("Sad", "sadness"), ("surprised", "surprise"), ("Contempt", "contempt"),
])
def test_canonical_expression_spellings(name, canon):
    assert canonical_expression(name) == canon


def test_canonical_expression_unknown_name():
    with pytest.raises(KeyError, match="boredom"):
        canonical_expression("boredom")


@pytest.mark.parametrize("src,name,dst,expected", [
    (FER2013, "happy", ABAW_EXPR, 4),
    (FER2013, "angry", ABAW_EXPR, 1),
    (FER2013, "neutral", ABAW_EXPR, 0),
    (FER2013, "sad", LSD, 4),
    (AFFECTNET8, "Contempt", ABAW_EXPR, -1),
    (AFFECTNET8, "Contempt", CKPLUS, 1),
    (AFFECTNET8, "Happy", FER2013, 3),
    (CKPLUS, "happy", ABAW_EXPR, 4),
    (CKPLUS, "contempt", FER2013, -1),
    (ABAW_EXPR, "Other", AFFECTNET8, -1),
    (ABAW_EXPR, "Neutral", LSD, -1),
    (LSD, "Surprise", AFFECTNET8, 3),
])
def test_mapping_by_name(src, name, dst, expected):
    m = src.mapping_to(dst)
    assert m.dtype == np.int64 and m.shape == (len(src),)
    assert m[src.index(name)] == expected


@pytest.mark.parametrize("src", EXPR_SETS, ids=lambda s: s.name)
@pytest.mark.parametrize("dst", EXPR_SETS, ids=lambda s: s.name)
def test_mapping_preserves_names(src, dst):
    """Every mapped class lands on the class of the same canonical name, never by position."""
    for i, j in enumerate(src.mapping_to(dst)):
        if j >= 0:
            assert dst.canonical[j] == src.canonical[i]
        else:
            assert src.canonical[i] not in dst.canonical


def test_mapping_to_self_is_identity():
    for s in (*EXPR_SETS, ABAW_AU, CKPLUS_AU):
        np.testing.assert_array_equal(s.mapping_to(s), np.arange(len(s)))


def test_mapping_across_kinds_refused():
    with pytest.raises(ValueError, match="cannot map"):
        ABAW_EXPR.mapping_to(ABAW_AU)


def test_convert_passes_sentinel_and_out_of_range_through_as_minus_one():
    # FER2013: angry disgust fear happy sad surprise neutral
    out = FER2013.convert([3, -1, 6, 0, 7, 5], ABAW_EXPR)
    np.testing.assert_array_equal(out, [4, -1, 0, 1, -1, 6])
    assert out.dtype == np.int64
    # AffectNet contempt has no ABAW class
    np.testing.assert_array_equal(AFFECTNET8.convert([7, 1, -1], ABAW_EXPR), [-1, 4, -1])
    # round trip through a superset is lossless
    idx = np.arange(len(LSD))
    np.testing.assert_array_equal(ABAW_EXPR.convert(LSD.convert(idx, ABAW_EXPR), LSD), idx)


def test_convert_keeps_shape():
    x = np.array([[0, 1], [-1, 3]])
    assert FER2013.convert(x, ABAW_EXPR).shape == (2, 2)


@pytest.mark.parametrize("name", ["AU01_r", "AU01_c", "AU01", "au1", "AU 1", "AU1", " AU001 "])
def test_canonical_au_spellings(name):
    assert canonical_au(name) == "AU1"


def test_canonical_au_two_digits():
    assert canonical_au("AU12_r") == "AU12"
    assert canonical_au("au26") == "AU26"


@pytest.mark.parametrize("name", ["AU", "AU1_x", "1", "valence", "AUx", "AU01_rc"])
def test_canonical_au_rejects_non_au(name):
    with pytest.raises(KeyError):
        canonical_au(name)


def test_au_mapping_by_name_openface_order():
    openface = LabelSet("openface", "au", ("AU26_c", "AU01_c", "AU12_c"))
    m = openface.mapping_to(ABAW_AU)
    np.testing.assert_array_equal(m, [ABAW_AU.index("AU26"), 0, ABAW_AU.index("AU12")])
    # every ABAW AU is coded by CK+; CK+ AU5 / AU9 / AU27 are not ABAW AUs
    assert (ABAW_AU.mapping_to(CKPLUS_AU) >= 0).all()
    back = CKPLUS_AU.mapping_to(ABAW_AU)
    absent = {CKPLUS_AU.classes[i] for i in np.flatnonzero(back < 0)}
    assert absent == {"AU5", "AU9", "AU14", "AU16", "AU17", "AU20", "AU27"}


def test_labelset_parse():
    assert FER2013.parse("happy") == 3
    assert FER2013.parse(" Happiness ") == 3
    assert FER2013.parse("3") == 3
    assert FER2013.parse("-1") == -1
    assert ABAW_EXPR.parse("7") == 7


@pytest.mark.parametrize("value,match", [
    ("7", r"class index 7 out of range for 'fer2013' \(0..6\)"),
    ("-2", "out of range"),
    ("contempt", "'contempt' is not a class of label set 'fer2013'"),
    ("boredom", "'boredom' is not a class"),
])
def test_labelset_parse_errors(value, match):
    with pytest.raises((KeyError, ValueError), match=match):
        FER2013.parse(value)


def test_labelset_index_error_lists_classes():
    with pytest.raises(KeyError, match=r"'Neutral' is not a class of label set 'lsd' \['Anger'"):
        LSD.index("Neutral")


def test_labelset_rejects_duplicates_by_canonical_name():
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet("bad", "expression", ("Happy", "happiness"))
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet("bad", "au", ("AU01_r", "AU1"))


def test_get_label_set():
    for name, s in LABEL_SETS.items():
        assert get_label_set(name) is s
    with pytest.raises(KeyError, match="known"):
        get_label_set("raf_db")


def test_va_valid_numpy_and_torch():
    va = np.array([[0.1, 0.2], [-5, -5], [-5, 0.3], [0.4, -5], [-1, 1]], np.float32)
    expected = [True, False, False, False, True]
    np.testing.assert_array_equal(va_valid(va), expected)
    out = va_valid(torch.from_numpy(va))
    assert out.dtype == torch.bool
    assert out.tolist() == expected
    # leading batch dims are kept
    assert va_valid(np.zeros((2, 3, 2))).shape == (2, 3)


def test_expr_and_au_valid_numpy_and_torch():
    e = np.array([0, -1, 7, 3])
    np.testing.assert_array_equal(expr_valid(e), [True, False, True, True])
    assert expr_valid(torch.tensor(e)).tolist() == [True, False, True, True]
    au = np.array([[0, 1, -1], [-1, -1, 1]])
    np.testing.assert_array_equal(au_valid(au), [[True, True, False], [False, False, True]])
    assert au_valid(torch.tensor(au, dtype=torch.float32)).tolist() == \
        [[True, True, False], [False, False, True]]
