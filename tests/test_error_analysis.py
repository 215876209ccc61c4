"""Error analysis (L33): confusion matrix, Wilson intervals, hand tags, slices, and the image and text categories."""

import csv
from importlib.resources import files

import numpy as np
import pytest

from mastery.eval.error_analysis import (
    HAND_PREFIX,
    ErrorAnalysisError,
    HandTag,
    Predictions,
    apply_hand_tags,
    category_masks,
    confusion_matrix,
    load_hand_tags,
    slice_table,
    what_to_fix,
    wilson_interval,
    worst_errors,
)
from mastery.text.text_slices import (
    CONTRA_SCORE,
    CONTRA_WORDS,
    CONTRAST,
    NEGATION,
    SARCASM,
    text_categories,
    text_features,
    text_thresholds,
)
from mastery.vision.image_slices import (
    BLURRY,
    BRIGHT,
    DARK,
    LOW_CONTRAST,
    image_categories,
    image_thresholds,
    laplacian_variance,
    rms_contrast,
)


# -- confusion matrix, worst errors ----------------------------------------------------------------------
def test_confusion_matrix_equals_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    y_pred[:5] = 6  # class 6 predicted often; make sure a row without examples still appears
    ours = confusion_matrix(y_true, y_pred, 8)
    np.testing.assert_array_equal(ours, sk.confusion_matrix(y_true, y_pred, labels=range(8)))
    assert ours.sum() == 500 and ours[7].sum() == 0


def test_confusion_matrix_refuses_labels_out_of_range():
    with pytest.raises(ErrorAnalysisError, match=r"y_pred holds labels outside \[0, 3\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)


def _pred(y_true, probs, ids=None):
    probs = np.asarray(probs, dtype=float)
    ids = ids or tuple(f"e{i}" for i in range(len(y_true)))
    return Predictions("toy", tuple(ids), np.asarray(y_true), probs, tuple(str(c) for c in range(probs.shape[1])))


def test_worst_errors_are_the_most_confident_mistakes():
    pred = _pred([0, 0, 1, 1, 0], [[0.1, 0.9], [0.4, 0.6], [0.99, 0.01], [0.2, 0.8], [0.3, 0.7]])
    # mistakes: e0 (conf 0.9), e1 (0.6), e2 (0.99), e4 (0.7); e3 is right despite 0.8
    assert list(worst_errors(pred, 3)) == [2, 0, 4]
    np.testing.assert_allclose(pred.margin, [0.8, 0.2, 0.98, 0.6, 0.4])


def test_predictions_refuse_mismatched_shapes():
    with pytest.raises(ErrorAnalysisError, match="probabilities have shape"):
        _pred([0, 1], [[0.5, 0.5]])


# -- Wilson interval ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Stat Med 17:857, Table I, method 3 (score, no correction)
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (29, 29, 0.8830, 1.0),
])
def test_wilson_interval_matches_newcombe(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ErrorAnalysisError, match="successes <= n"):
        wilson_interval(5, 3)


# -- hand tags ----------------------------------------------------------------------------------------------
def test_hand_tags_override_automatic_categories():
    ids = ("a", "b", "c")
    auto = {"blurry": np.array([True, True, False]), "dark": np.array([False, True, True])}
    tags = [HandTag("mnist", "b", "label noise", "looks like a 7"), HandTag("cifar10", "c", "other set"),
            HandTag("mnist", "zzz", "absent")]
    cats = apply_hand_tags(ids, auto, "mnist", tags)
    assert cats.names == (("blurry",), (HAND_PREFIX + "label noise",), ("dark",))
    assert cats.source == ("auto", "hand", "auto") and cats.notes == {1: "looks like a 7"}
    masks = category_masks(cats, order=["blurry", "dark"])
    assert list(masks) == ["blurry", "dark", HAND_PREFIX + "label noise"]
    np.testing.assert_array_equal(masks["blurry"], [True, False, False])  # b left its automatic slices
    np.testing.assert_array_equal(masks["dark"], [False, False, True])


def test_hand_tag_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "tags.csv"
    bad.write_text("dataset,example_id,note\nmnist,test/1,x\n")
    with pytest.raises(ErrorAnalysisError, match="missing column"):
        load_hand_tags(bad)
    bad.write_text("dataset,example_id,tag,note\nmnist,test/1,a,\nmnist,test/1,b,\n")
    with pytest.raises(ErrorAnalysisError, match="line 3: mnist test/1 is tagged twice"):
        load_hand_tags(bad)


def test_packaged_hand_tags_are_well_formed():
    path = files("mastery.eval") / "hand_tags" / "l33.csv"
    tags = load_hand_tags(path)
    assert {t.dataset for t in tags} <= {"mnist", "cifar10", "imdb"}
    for tag in tags:
        parts = tag.example_id.split("/")
        if tag.dataset == "imdb":
            assert parts[0] == "test" and parts[1] in ("neg", "pos") and parts[2].isdigit(), tag
        else:
            assert parts[0] == "test" and parts[1].isdigit(), tag
    with path.open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == len(tags)


# -- slices and recommendations ----------------------------------------------------------------------------
def _toy_with_bad_slice():
    """1,000 examples, 5% errors outside the slice, 50% inside a slice of 100."""
    n = 1000
    y = np.zeros(n, dtype=int)
    wrong = np.zeros(n, bool)
    wrong[:50] = True  # slice: first 100
    wrong[100:145] = True
    probs = np.where(wrong[:, None], [[0.2, 0.8]], [[0.9, 0.1]])
    slices = {"blurry": np.arange(n) < 100, "dark": (np.arange(n) >= 500) & (np.arange(n) < 520)}
    return _pred(y, probs), slices


def test_slice_table_counts_rates_and_lift():
    pred, slices = _toy_with_bad_slice()
    rows = {r.name: r for r in slice_table(pred.correct, slices)}
    assert (rows["all"].n, rows["all"].errors) == (1000, 95)
    blurry = rows["blurry"]
    assert (blurry.n, blurry.errors, blurry.error_rate) == (100, 50, 0.5)
    assert blurry.lift == pytest.approx(0.5 / 0.095)
    assert blurry.excess_errors == pytest.approx(100 * (0.5 - 0.095))
    assert blurry.ci_low < 0.5 < blurry.ci_high
    assert rows["dark"].errors == 0 and rows["dark"].ci_high > 0


def test_what_to_fix_names_the_slice_with_its_numbers():
    pred, slices = _toy_with_bad_slice()
    rows = slice_table(pred.correct, slices)
    cats = apply_hand_tags(pred.ids, slices, "toy", [])
    cm = confusion_matrix(pred.y_true, pred.y_pred, 2)
    lines = what_to_fix(pred, rows, cm, cats, worst_errors(pred, 10), min_count=30,
                        actions={"blurry": "augment with blur"})
    assert lines[0].startswith("Largest excess: slice 'blurry' has error rate 50.0%")
    assert "on 100 examples against 9.5% overall" in lines[0] and lines[0].endswith("augment with blur.")
    assert lines[1].startswith("Errors lean one way: 95 of 95 (100.0% [96.1%, 100.0%]) are 0 examples called 1")
    # the same slice below min_count is not recommended
    lines = what_to_fix(pred, rows, cm, cats, worst_errors(pred, 10), min_count=101, actions={})
    assert lines[0].startswith("No input slice with at least 101 examples")


# -- image categories --------------------------------------------------------------------------------------
def _sharp_images():
    rng = np.random.default_rng(0)
    checker = (np.indices((32, 32)).sum(0) // 4 % 2 * 200 + 20).astype(np.uint8)  # 4-px squares
    noise = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    return np.stack([checker, noise])


def test_blurred_image_has_lower_laplacian_variance():
    from scipy.ndimage import gaussian_filter

    sharp = _sharp_images()
    blurred = np.stack([gaussian_filter(img.astype(float), 1.5).round().astype(np.uint8) for img in sharp])
    before, after = laplacian_variance(sharp), laplacian_variance(blurred)
    assert np.all(after < 0.5 * before), (before, after)
    rgb = np.repeat(sharp[..., None], 3, axis=-1)  # gray as RGB: the same luma
    np.testing.assert_allclose(laplacian_variance(rgb), before)


def test_laplacian_variance_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    img = _sharp_images()[1]
    expected = cv2.Laplacian(img.astype(np.float64), cv2.CV_64F).var()
    assert laplacian_variance(img[None])[0] == pytest.approx(expected)


def test_image_categories_from_quantiles():
    flat_dark = np.full((28, 28), 10, np.uint8)
    flat_bright = np.full((28, 28), 240, np.uint8)
    sharp = _sharp_images()[:, :28, :28]
    images = np.stack([flat_dark, flat_bright, *sharp, *sharp, *sharp])  # 8 images
    margin = np.linspace(0.1, 0.9, 8)
    assert rms_contrast(images)[0] == pytest.approx(0, abs=1e-12)
    th = image_thresholds(images, margin, quantile=0.15)
    cats = image_categories(images, margin, th)
    assert cats[DARK][0] and not cats[DARK][1] and cats[BRIGHT][1] and not cats[BRIGHT][0]
    assert cats[LOW_CONTRAST][:2].all() and not cats[LOW_CONTRAST][2:].any()
    assert cats[BLURRY][:2].all()  # a flat image has no edges at all
    assert {r["slice"] for r in th.rows()} == set(cats)


# -- text categories -------------------------------------------------------------------------------------
REVIEWS = [
    "This is not a good film. I never liked it and it isn't funny, nor is it clever.",  # negation, negative
    "A good film with a lovely cast and a clever script that everyone should see this year.",  # plain positive
    "Oh great, another sequel. Yeah right, a \"masterpiece\". Awful.",  # sarcasm, negative
    "The acting is superb, but the plot is weak; however the ending works, although it is slow.",  # contrast, pos
    "I'd give it 10/10 for effort, yet it was a waste of time, boring and awful.",  # score contradicts negative
    "Awful title, terrible poster, boring trailer... and the film itself is wonderful.",  # words contradict pos
]
LABELS = np.array([0, 1, 0, 1, 0, 1])


def test_text_categories_on_constructed_reviews():
    features = text_features(REVIEWS)
    cats = text_categories(features, LABELS, text_thresholds(features, quantile=0.2))
    assert cats[NEGATION][0] and not cats[NEGATION][1]
    assert cats[SARCASM][2] and not cats[SARCASM][[0, 1, 3]].any()
    assert cats[CONTRAST][3] and not cats[CONTRAST][1]
    np.testing.assert_array_equal(cats[CONTRA_SCORE], [False, False, False, False, True, False])
    assert cats[CONTRA_WORDS][5] and not cats[CONTRA_WORDS][1]
    # the same 10/10 in a positive review agrees with its label
    flipped = text_categories(features, 1 - LABELS, text_thresholds(features, quantile=0.2))
    assert not flipped[CONTRA_SCORE][4]


def test_negation_counts_contractions_and_ignores_lookalikes():
    features = text_features(["I don't think it wasn't nothing.", "Notable knots and nothingness, cannons."])
    assert features.negations[0] == 3
    assert features.negations[1] == 0


def test_what_to_fix_names_the_commonest_confusion_of_many_classes():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    probs = np.eye(3)[[2, 2, 0, 0, 1, 1, 2, 2]] * 0.7 + 0.1  # predictions 2, 2, 0, 0, 1, 1, 2, 2
    pred = _pred(y, probs)
    cm = confusion_matrix(pred.y_true, pred.y_pred, 3)
    cats = apply_hand_tags(pred.ids, {}, "toy", [])
    lines = what_to_fix(pred, slice_table(pred.correct, {}), cm, cats, worst_errors(pred, 3), min_count=1,
                        actions={})
    assert "Most frequent confusion: 0 -> 2, 2 times (50.0% of all errors)" in lines[1]
