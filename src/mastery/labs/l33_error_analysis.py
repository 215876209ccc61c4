"""L33 · Systematic error analysis: confusion matrices, the most confident mistakes, slices with intervals,
hand tags, and what to fix next, for the MNIST, CIFAR-10 and IMDb models of the registry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

if TYPE_CHECKING:
    from mastery.eval.error_analysis import HandTag, Predictions

REQUIRES: tuple[str, ...] = ("mnist", "cifar10", "imdb")  # registered assets the tiny preset reads

REGISTRY_MODELS = {"mnist": "mnist-cnn", "cifar10": "cifar10-cnn", "imdb": "imdb-sentiment-minilm"}

# What usually helps each kind of failure, per dataset: one clause, completed with the numbers by what_to_fix.
_SHARED = {
    "label noise": "relabel or drop these examples (a confident 'error' on a wrong label is not the model's fault)",
    "model error": "clear to a person: more varied training examples of the true class, then re-check these",
}
_PHOTO = {
    "blurry": "augment training with Gaussian blur and down-up sampling, or screen inputs by Laplacian variance",
    "low contrast": "augment with contrast and gamma jitter, or normalise contrast per image before the model",
    "dark": "augment with brightness jitter toward dark images",
    "bright": "augment with brightness jitter toward bright, washed-out images",
    "unrecognisable at 32 px": "nothing to learn at this resolution: abstain on a low margin instead",
    "misleading background": "augment with background swaps or random erasing so that the object, not its "
                             "usual setting, decides",
    "look-alike classes": "add hard examples of the confused pair (cat/dog) or a higher-resolution model",
    "tiny object": "augment with random zoom-out and crops so small objects are seen in training",
    "washed out": "augment with contrast and gamma jitter",
}
_DIGITS = {
    "blurry": "augment with blur and stroke-width changes (erosion, dilation)",
    "low contrast": "augment with intensity scaling: faint strokes",
    "dark": "augment with thinner strokes (erosion): less ink",
    "bright": "augment with thicker strokes (dilation): more ink",
    "ambiguous digit": "hard for people too: abstain on a low margin rather than train on them",
    "atypical shape": "augment with elastic distortions (Simard et al. 2003) to cover unusual handwriting",
    "unusual orientation": "augment with larger random rotations",
}
_REVIEWS = {
    "negation": "add negation-dense reviews to fine-tuning (or contrast pairs that flip a sentence with 'not')",
    "contrast words": "add mixed reviews whose verdict follows 'but'/'however' to fine-tuning",
    "sarcasm cues": "collect sarcastic reviews; surface cues alone are weak, so label a sample by hand first",
    "contradicting score": "read explicit scores ('7/10') as a feature or a rule: the author states the verdict",
    "contradicting words": "add mixed reviews (praise for parts, verdict against the whole) to fine-tuning",
    "length Q4 (longest)": "raise max_length or pool over chunks: the middle of long reviews is cut",
    "length Q1 (shortest)": "short reviews carry few cues: add more of them to training",
    "mixed review": "add mixed reviews with their overall verdict to fine-tuning",
    "sarcasm": "collect and label sarcastic reviews for fine-tuning",
    "verdict in the middle": "raise max_length or pool over chunks: the middle of long reviews is cut",
    "praise aimed elsewhere": "add reviews whose praise goes to a book, an actor or another film than the one rated",
}
ACTIONS = {"mnist": {**_SHARED, **_DIGITS}, "cifar10": {**_SHARED, **_PHOTO}, "imdb": {**_SHARED, **_REVIEWS}}


@dataclass(frozen=True)
class Config:
    # registry: the trained models mnist-cnn, cifar10-cnn and imdb-sentiment-minilm; train: small stand-ins
    # trained here on a slice (a SmallCNN for each image set, TF-IDF + logistic regression for IMDb)
    models: Literal["registry", "train"] = "registry"
    mnist_test_size: Annotated[int, Interval(ge=10, le=10_000)] | None = None  # None = the whole test split
    cifar_test_size: Annotated[int, Interval(ge=10, le=10_000)] | None = None
    # IMDb: a stratified sample of the 25,000 test reviews (MiniLM inference is the slow part on a CPU)
    imdb_test_size: Annotated[int, Interval(ge=10, le=25_000)] | None = 5000
    train_size: Annotated[int, Interval(ge=100, le=50_000)] = 2000  # models=train: training examples per set
    train_epochs: Annotated[int, Interval(ge=1, le=100)] = 1  # models=train
    worst_k: Annotated[int, Interval(ge=1, le=100)] = 10
    slice_quantile: Annotated[float, Interval(ge=0.01, le=0.49)] = 0.1  # tails that define threshold slices
    min_slice_count: Annotated[int, Interval(ge=1, le=100_000)] = 30  # smallest slice a recommendation may cite
    defer_fraction: Annotated[float, Interval(ge=0.0, le=0.5)] = 0.05  # abstention rule the report prices
    # |accuracy - the registry's recorded accuracy| allowed on a whole test split (bf16 kernels may differ)
    accuracy_tolerance: Fraction = 0.005
    min_hand_tagged_worst: Annotated[int, Interval(ge=0, le=100)] = 10  # hand tags expected among the worst errors
    hand_tags: str = ""  # a hand-tag CSV (dataset,example_id,tag,note); "" = the packaged eval/hand_tags/l33.csv
    imdb_batch_size: Annotated[int, Interval(ge=1, le=1024)] = 32
    bf16: Literal["auto", "on", "off"] = "auto"  # autocast for the MiniLM forward pass
    device: Device = "auto"
    seed: int = 0

    def validate(self) -> None:
        from mastery.core.errors import ConfigError

        if self.min_hand_tagged_worst > self.worst_k:
            raise ConfigError("min_hand_tagged_worst must not exceed worst_k")


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("mnist_accuracy", "cifar10_accuracy", "imdb_accuracy", "mnist_top_lift", "cifar10_top_lift",
            "imdb_top_lift")

PRESETS = {
    "tiny": Config(models="train", mnist_test_size=600, cifar_test_size=600, imdb_test_size=400, train_size=1500,
                   min_slice_count=10, min_hand_tagged_worst=0),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.assets.loaders import load_cifar10, load_imdb, load_mnist
    from mastery.core.precision import decide_bf16
    from mastery.eval.error_analysis import load_hand_tags
    from mastery.nn.train import start_torch_report

    report, device = start_torch_report("l33", config)
    tags = load_hand_tags(_hand_tag_path(config))
    report.metric("hand_tags_in_file", len(tags))

    mnist = load_mnist()
    models = [_images(report, config, "mnist", mnist["x_train"], mnist["y_train"], mnist["x_test"], mnist["y_test"],
                      [str(d) for d in range(10)], config.mnist_test_size, tags, str(device), progress)]
    cifar = load_cifar10()
    models.append(_images(report, config, "cifar10", cifar["x_train"], cifar["y_train"], cifar["x_test"],
                          cifar["y_test"], cifar["class_names"], config.cifar_test_size, tags, str(device), progress))
    if cifar["source"] == "jpeg-q75":
        report.note("CIFAR-10 is the registry's JPEG (quality 75) copy, as the model was trained and tested on: "
                    "JPEG blocking lowers high-frequency detail, so the blur slice here measures soft or "
                    "featureless photos more than camera blur.")
    precision = decide_bf16(config.bf16, device) if config.models == "registry" else None
    if precision is not None:
        precision.record(report)
    models.append(_imdb(report, config, load_imdb(), tags, str(device), precision.bf16 if precision else False,
                        progress))
    report.table("Models analysed", models)

    report.note(
        "Method: for each model, the confusion matrix on its test split; the worst errors are the mistakes with "
        "the highest predicted probability; automatic categories come from the inputs (images: blur by the "
        "variance of the Laplacian, RMS contrast, mean brightness; reviews: negation and contrast-word density, "
        "sarcasm cues, length quartiles, scores and strong words that contradict the label) and from the model "
        "(ambiguous = smallest margin between the top two probabilities). Thresholds are quantiles of the set "
        "analysed (tables 'Thresholds'). A hand-tag file (dataset, example_id, tag, note) replaces the automatic "
        "categories of the examples it lists; tagged examples always join a sampled set. The 'hand: ...' slices hold "
        "only the examples someone tagged (here the most confident errors), so their error rate is 100% by "
        "selection: read them as counts. Error rates per slice "
        "carry Wilson 95% intervals (scipy); 'lift' is the slice's error rate over the overall one and 'excess "
        "errors' is n x (slice rate - overall rate). 'What to fix next' is written by code: it ranks input "
        f"slices of at least {config.min_slice_count} examples whose interval lies wholly above the overall rate "
        "by excess errors, then names the commonest confusion, prices an abstention rule and sums the hand tags.")
    return report


def _hand_tag_path(config: Config) -> Any:
    from importlib.resources import files
    from pathlib import Path

    return Path(config.hand_tags) if config.hand_tags else files("mastery.eval") / "hand_tags" / "l33.csv"


def _sample_indices(n: int, size: int | None, seed: int, keep: np.ndarray) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` (all when None), plus the hand-tagged ``keep``."""
    if size is None or size >= n:
        return np.arange(n)
    picked = np.random.default_rng(seed).choice(n, size, replace=False)
    return np.union1d(picked, keep)


def _tagged_positions(tags: list[HandTag], dataset: str) -> np.ndarray:
    """Test-split positions named by the hand tags of one image dataset (ids are ``test/<index>``)."""
    return np.array(sorted(int(t.example_id.split("/")[1]) for t in tags if t.dataset == dataset
                           and t.example_id.startswith("test/")), dtype=np.int64)


# -- images -------------------------------------------------------------------------------------------------
def _images(report: Report, config: Config, dataset: str, x_train: np.ndarray, y_train: np.ndarray,
            x_test: np.ndarray, y_test: np.ndarray, class_names: list[str], test_size: int | None,
            tags: list[HandTag], device: str, progress: Progress) -> dict[str, Any]:
    from mastery.eval.error_analysis import Predictions, image_probabilities
    from mastery.vision.image_slices import AMBIGUOUS, image_categories, image_thresholds

    idx = _sample_indices(len(x_test), test_size, config.seed, _tagged_positions(tags, dataset))
    images, labels = x_test[idx], np.asarray(y_test, dtype=np.int64)[idx]
    progress.stage(f"{dataset}: model", None)
    if config.models == "registry":
        model, mean, std, recorded, ref = _registry_image_model(dataset, device)
    else:
        model, mean, std = _train_image_model(config, x_train, y_train, len(class_names), device)
        recorded, ref = None, "trained here"
    start = time.perf_counter()
    probs = image_probabilities(model, images, mean, std, device=device)
    seconds = time.perf_counter() - start
    pred = Predictions(dataset, tuple(f"test/{i}" for i in idx), labels, probs.astype(np.float64),
                       tuple(class_names))
    thresholds = image_thresholds(images, pred.margin, config.slice_quantile)
    auto = image_categories(images, pred.margin, thresholds)
    worst = _analyse(report, config, pred, auto, thresholds.rows(), tags, model_slices={AMBIGUOUS},
                     recorded=recorded, ref=ref, sampled=len(idx) < len(x_test))
    from mastery.nn.plots import image_grid

    captions = [f"#{r + 1} {class_names[labels[i]]}->{class_names[pred.y_pred[i]]}\np={pred.confidence[i]:.3f}"
                for r, i in enumerate(worst)]
    report.figure(f"{dataset}_worst_errors", image_grid(
        images[worst], captions, cols=5, title=f"{dataset}: the {len(worst)} most confident errors (true->predicted)"))
    return _model_row(report, pred, ref, recorded, seconds)


def _registry_image_model(dataset: str, device: str) -> tuple[Any, list[float], list[float], float, str]:
    from mastery.core.precision import bf16_on_reload
    from mastery.ops.registry_loaders import load_torch_module

    model, loaded = load_torch_module(REGISTRY_MODELS[dataset], device=device)
    if hasattr(model, "bf16"):  # CifarCNN: bf16 autocast as trained, where this device runs it natively
        model.bf16 = bf16_on_reload(bool(model.bf16), device)
    cfg = loaded.config
    return (model, list(cfg["mean"]), list(cfg["std"]), float(loaded.metrics["test_accuracy"]), str(loaded.ref))


def _train_image_model(config: Config, x_train: np.ndarray, y_train: np.ndarray, classes: int,
                       device: str) -> tuple[Any, tuple[float, ...], tuple[float, ...]]:
    """A SmallCNN trained for ``train_epochs`` on ``train_size`` images: the tiny preset's stand-in."""
    import torch

    from mastery.nn.data import ImageArrayDataset, channel_stats, make_loader, subsample
    from mastery.nn.models import SmallCNN
    from mastery.nn.train import build_optimizer, fit

    x, y = subsample(x_train, np.asarray(y_train, dtype=np.int64), config.train_size, config.seed)
    mean, std = channel_stats(x)
    loader = make_loader(ImageArrayDataset(x, y, mean=mean, std=std, num_classes=classes), 64, shuffle=True,
                         seed=config.seed, device=device)
    torch.manual_seed(config.seed)
    model = SmallCNN(in_channels=1 if x.ndim == 3 else x.shape[-1], num_classes=classes, image_size=x.shape[1])
    fit(model, loader, build_optimizer("adam", model.parameters(), 1e-3), epochs=config.train_epochs,
        device=torch.device(device))
    return model.eval(), mean, std


# -- text ---------------------------------------------------------------------------------------------------
def _imdb(report: Report, config: Config, imdb: Any, tags: list[HandTag], device: str, bf16: bool,
          progress: Progress) -> dict[str, Any]:

    from mastery.eval.error_analysis import AMBIGUOUS_MAX_MARGIN, Predictions, ambiguity_cutoff
    from mastery.text.text_slices import normalise, text_categories, text_features, text_thresholds

    sample, n_test = _imdb_sample(config, imdb, tags)
    texts, labels = sample.text.tolist(), sample.label.to_numpy(dtype=np.int64)
    progress.stage("imdb: model", None)
    start = time.perf_counter()
    if config.models == "registry":
        probs, recorded, ref = _registry_text_probs(config, texts, device, bf16, progress)
    else:
        probs, recorded, ref = _train_text_probs(config, imdb, texts), None, "trained here"
    seconds = time.perf_counter() - start
    pred = Predictions("imdb", tuple(sample.example_id), labels, probs.astype(np.float64), ("negative", "positive"))
    features = text_features(texts)
    thresholds = text_thresholds(features, config.slice_quantile)
    auto = text_categories(features, labels, thresholds)
    from mastery.vision.image_slices import AMBIGUOUS

    margin_cut = ambiguity_cutoff(pred.margin, config.slice_quantile)
    auto[AMBIGUOUS] = pred.margin <= margin_cut
    rows = [*thresholds.rows(), {"slice": AMBIGUOUS, "rule": f"top-1 minus top-2 probability <= {margin_cut:.4g}",
                                 "from": f"lower {config.slice_quantile:.0%} quantile of the set, capped at "
                                         f"{AMBIGUOUS_MAX_MARGIN}"}]

    def snippet(i: int) -> str:
        text = " ".join(normalise(texts[i]).split())
        return text if len(text) <= 260 else f"{text[:170]} ... {text[-80:]}"

    _analyse(report, config, pred, auto, rows, tags, model_slices={AMBIGUOUS}, recorded=recorded, ref=ref,
             sampled=len(sample) < n_test, snippet=snippet)
    report.note("IMDb sarcasm cues are surface patterns ('yeah right', 'oh great', scare quotes around praise, "
                "'so bad it's good', '?!'); their precision as a sarcasm detector is not measured here, so the "
                "slice reads as 'has such a cue', and the hand tags name actual sarcasm where a person saw it.")
    return _model_row(report, pred, ref, recorded, seconds)


def _model_row(report: Report, pred: Predictions, ref: str, recorded: float | None, seconds: float) -> dict[str, Any]:
    report.timing(f"{pred.dataset}_inference_seconds", seconds)
    report.timing(f"{pred.dataset}_examples_per_second", len(pred.ids) / max(seconds, 1e-9))
    return {"dataset": pred.dataset, "model": ref, "test examples": len(pred.ids),
            "accuracy": round(pred.accuracy, 4), "recorded accuracy": recorded if recorded is not None else "-",
            "errors": int((~pred.correct).sum()), "inference s": round(seconds, 1)}


def _imdb_sample(config: Config, imdb: Any, tags: list[HandTag]) -> tuple[Any, int]:
    """(the stratified test sample plus any hand-tagged reviews, with ids ``test/<neg|pos>/<id>``; test size)."""
    import pandas as pd

    from mastery.assets.loaders import balanced_subset

    test = imdb[imdb.split == "test"].copy()
    test["example_id"] = ["test/" + ("pos" if lab else "neg") + f"/{i}" for lab, i in zip(test.label, test.id,
                                                                                          strict=True)]
    sample = balanced_subset(test, config.imdb_test_size, config.seed)
    tagged = {t.example_id for t in tags if t.dataset == "imdb"}
    extra = test[test.example_id.isin(tagged) & ~test.example_id.isin(set(sample.example_id))]
    return pd.concat([sample, extra], ignore_index=True), len(test)


def _registry_text_probs(config: Config, texts: list[str], device: str, bf16: bool,
                         progress: Progress) -> tuple[np.ndarray, float, str]:
    from mastery.eval.error_analysis import text_probabilities
    from mastery.finetune.classify import load_registered_classifier
    from mastery.ops.registry import open_registry

    loaded = open_registry().load(REGISTRY_MODELS["imdb"])
    cfg = loaded.config
    tokenizer, model = load_registered_classifier(loaded.path, int(cfg["num_labels"]), str(cfg["pooling"]))
    probs = text_probabilities(tokenizer, model.to(device), texts, max_length=int(cfg["max_length"]),
                               head_tokens=int(cfg["head_tokens"]), batch_size=config.imdb_batch_size, bf16=bf16,
                               progress=progress)
    return probs, float(loaded.metrics["accuracy"]), str(loaded.ref)


def _train_text_probs(config: Config, imdb: Any, texts: list[str]) -> np.ndarray:
    """TF-IDF + logistic regression on ``train_size`` training reviews: the tiny preset's stand-in."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from mastery.assets.loaders import balanced_subset

    train = balanced_subset(imdb[imdb.split == "train"], config.train_size, config.seed)
    model = make_pipeline(TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(max_iter=1000))
    model.fit(train.text.tolist(), train.label.to_numpy())
    return model.predict_proba(texts)


# -- the analysis, the same for every model ------------------------------------------------------------------
def _analyse(report: Report, config: Config, pred: Predictions, auto: dict[str, np.ndarray],
             threshold_rows: list[dict[str, Any]], tags: list[HandTag], *, model_slices: set[str],
             recorded: float | None, ref: str, sampled: bool, snippet: Any = None) -> np.ndarray:
    from mastery.eval.error_analysis import (
        HAND_PREFIX,
        apply_hand_tags,
        category_masks,
        confusion_matrix,
        slice_figure,
        slice_table,
        top_confusions,
        what_to_fix,
        wilson_interval,
        worst_error_rows,
        worst_errors,
    )
    from mastery.nn.plots import confusion_matrix_figure

    ds, n, k = pred.dataset, len(pred.ids), len(pred.class_names)
    cm = confusion_matrix(pred.y_true, pred.y_pred, k)
    acc = pred.accuracy
    acc_low, acc_high = wilson_interval(int(pred.correct.sum()), n)
    report.metric(f"{ds}_n", n)
    report.metric(f"{ds}_accuracy", round(acc, 6))
    report.metric(f"{ds}_accuracy_ci95_low", round(acc_low, 6))
    report.metric(f"{ds}_accuracy_ci95_high", round(acc_high, 6))
    report.metric(f"{ds}_errors", int((~pred.correct).sum()))
    report.figure(f"{ds}_confusion_matrix", confusion_matrix_figure(
        cm, list(pred.class_names), f"{ds} ({ref}): {n:,} test examples, accuracy {acc:.4f}"))
    report.check(f"{ds}_confusion_sums_to_test_count", int(cm.sum()) == n and int(np.trace(cm)) ==
                 int(pred.correct.sum()), "the confusion matrix sums to the examples analysed and its diagonal "
                 "to the correct ones", f"{int(cm.sum())} of {n}")
    if recorded is not None:
        if sampled:
            ok = acc_low <= recorded <= acc_high
            expect = "the registry's recorded accuracy lies in the sample's Wilson 95% interval"
        else:
            ok = abs(acc - recorded) <= config.accuracy_tolerance
            expect = f"|accuracy - the registry's recorded accuracy| <= {config.accuracy_tolerance}"
        report.metric(f"{ds}_registry_accuracy", recorded)
        report.check(f"{ds}_accuracy_matches_registry", ok, expect,
                     f"{acc:.4f} [{acc_low:.4f}, {acc_high:.4f}] vs recorded {recorded:.4f}")
    else:
        chance = 1.0 / k
        report.check(f"{ds}_accuracy_above_chance", acc_low > chance,
                     f"the stand-in model's accuracy interval lies above chance ({chance:.2f})",
                     f"{acc:.4f} [{acc_low:.4f}, {acc_high:.4f}]")
    report.table(f"{ds}: most frequent confusions", top_confusions(cm, pred.class_names, k=5))

    # Categories: automatic, then the hand tags on top.
    no_tags = apply_hand_tags(pred.ids, auto, ds, [])
    categories = apply_hand_tags(pred.ids, auto, ds, tags)
    masks = category_masks(categories, order=list(auto))
    rows = slice_table(pred.correct, masks)
    report.table(f"{ds}: thresholds of the automatic slices", threshold_rows)
    report.table(f"{ds}: error rate per slice (Wilson 95% interval)", [r.as_row() for r in rows])
    report.figure(f"{ds}_slices", slice_figure(rows, f"{ds}: error rate per slice ({n:,} examples)"))
    finite = all(r.n == 0 or (0 <= r.ci_low <= r.error_rate <= r.ci_high <= 1) for r in rows)
    report.check(f"{ds}_every_slice_has_ci", finite and len(rows) > 1,
                 "every slice reports n, errors and a Wilson 95% interval around its error rate",
                 f"{len(rows) - 1} slices")
    input_rows = [r for r in rows[1:] if r.name not in model_slices and r.n >= config.min_slice_count]
    top = max(input_rows, key=lambda r: (r.lift, r.name), default=None)
    report.metric(f"{ds}_top_lift", round(top.lift, 4) if top else 0.0)

    worst = worst_errors(pred, config.worst_k)
    snippets = [snippet(int(i)) for i in worst] if snippet else None
    table = worst_error_rows(pred, worst, categories, auto_categories=no_tags, snippets=snippets)
    report.table(f"{ds}: the {config.worst_k} most confident errors", table)
    report.check(f"{ds}_worst_errors_listed", len(table) == config.worst_k,
                 f"the worst-error table has {config.worst_k} rows", len(table))

    listed = [t for t in tags if t.dataset == ds]
    present = {t.example_id for t in listed} & set(pred.ids)
    hand_worst = sum(categories.source[i] == "hand" for i in worst)
    report.metric(f"{ds}_hand_tagged", categories.hand_count)
    report.metric(f"{ds}_hand_tagged_worst", hand_worst)
    applied = categories.hand_count == len(present) and all(
        categories.names[pred.ids.index(i)][0].startswith(HAND_PREFIX) for i in present)
    report.check(f"{ds}_hand_tags_applied", applied and hand_worst >= config.min_hand_tagged_worst,
                 "every hand-tagged example present replaces its automatic categories, and at least "
                 f"{config.min_hand_tagged_worst} of the {config.worst_k} worst errors carry a hand tag",
                 f"{categories.hand_count} of {len(present)} applied; {hand_worst} of the worst tagged")

    advice = what_to_fix(pred, rows, cm, categories, worst, min_count=config.min_slice_count, actions=ACTIONS[ds],
                         model_slices=model_slices, defer_fraction=config.defer_fraction)
    report.table(f"{ds}: what to fix next", [{"#": i, "recommendation": line} for i, line in enumerate(advice, 1)])
    return worst
