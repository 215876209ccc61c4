"""L13 · Text processing and embeddings: BPE from scratch, word2vec, and a MiniLM semantic classifier."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Interval

from mastery.core.config import Fraction
from mastery.core.progress import Progress
from mastery.core.report import Report
from mastery.core.runtime import Device

NEIGHBOUR_WORDS = ("king", "love", "death", "good", "night", "lord", "sword", "father")
PLOT_WORDS = ("king", "queen", "prince", "duke", "lord", "lady", "father", "mother", "son", "daughter", "brother",
              "love", "hate", "death", "life", "blood", "sword", "war", "peace", "night", "day", "sun", "moon",
              "heaven", "hell", "god", "good", "bad", "sweet", "fair", "one", "two", "three", "ten", "hundred")


REQUIRES: tuple[str, ...] = ("tinyshakespeare", "imdb", "all-minilm-l6-v2")  # registered assets the tiny preset reads


@dataclass(frozen=True)
class Config:
    # BPE: trained on the first bpe_train_chars of tiny Shakespeare, measured on the rest (held out)
    bpe_vocab_size: Annotated[int, Interval(ge=257, le=1_000_000)] = 256 + 3000
    bpe_train_chars: Annotated[int, Interval(ge=1, le=100_000_000)] = 1_000_000
    bpe_heldout_chars: Annotated[int, Interval(ge=1, le=100_000_000)] = 100_000
    # word2vec (skip-gram, negative sampling) on tiny Shakespeare
    w2v_chars: Annotated[int, Interval(ge=1, le=100_000_000)] | None = None  # None = the whole text
    w2v_dim: Annotated[int, Interval(ge=1, le=4096)] = 100
    w2v_window: Annotated[int, Interval(ge=1, le=100)] = 5
    w2v_negatives: Annotated[int, Interval(ge=1, le=100)] = 5
    w2v_epochs: Annotated[int, Interval(ge=1, le=1000)] = 5
    w2v_min_count: Annotated[int, Interval(ge=1, le=1_000_000)] = 5
    w2v_batch_size: Annotated[int, Interval(ge=1, le=1_000_000)] = 1024
    w2v_lr: Annotated[float, Interval(gt=0, le=10)] = 3e-3
    # IMDb sentiment: MiniLM sentence embeddings + logistic regression vs TF-IDF + logistic regression
    # stratified subsets of IMDb's train / test splits (MiniLM on CPU is the bottleneck)
    n_train: Annotated[int, Interval(ge=10, le=25_000)] = 5000
    n_test: Annotated[int, Interval(ge=10, le=25_000)] = 3000
    # MiniLM word pieces per review; longer reviews are truncated
    max_seq_length: Annotated[int, Interval(ge=1, le=512)] = 256
    embed_batch_size: Annotated[int, Interval(ge=1, le=4096)] = 32
    device: Device = "auto"
    min_embed_f1: Fraction = 0.75
    min_tfidf_f1: Fraction = 0.75
    min_bpe_vocab_overlap: Fraction = 0.8
    seed: int = 0


# The numbers that summarise a run: the README table and the conformance test read them from here.
HEADLINE = ("embed_f1", "tfidf_f1")

PRESETS = {
    "tiny": Config(bpe_vocab_size=256 + 200, bpe_train_chars=60_000, bpe_heldout_chars=10_000, w2v_chars=150_000,
                   w2v_dim=32, w2v_epochs=1, w2v_min_count=3, w2v_lr=0.01, n_train=120, n_test=80, max_seq_length=64,
                   min_embed_f1=0.5, min_tfidf_f1=0.0, min_bpe_vocab_overlap=0.5),
    "full": Config(),
}


def run(config: Config, progress: Progress) -> Report:
    from mastery.assets.loaders import load_tinyshakespeare
    from mastery.nn.train import start_torch_report

    report, device = start_torch_report("l13", config)
    text = load_tinyshakespeare()
    _bpe(report, config, text, progress)
    _word2vec(report, config, text, device, progress)
    _sentiment(report, config, str(device), progress)
    return report


def _bpe(report: Report, config: Config, text: str, progress: Progress) -> None:
    from mastery.text.bpe import ByteBPE, TokenizerError, train_hf_bpe

    progress.stage("BPE", None)
    train, heldout = text[: config.bpe_train_chars], text[config.bpe_train_chars:][: config.bpe_heldout_chars]
    start = time.perf_counter()
    bpe = ByteBPE.train(train, config.bpe_vocab_size)
    report.timing("bpe_train_seconds", time.perf_counter() - start)
    start = time.perf_counter()
    hf = train_hf_bpe(train, config.bpe_vocab_size)
    report.timing("hf_bpe_train_seconds", time.perf_counter() - start)

    mine_ids, hf_ids = bpe.encode(heldout), hf.encode(heldout).ids
    mine_tokens, hf_vocab = set(bpe.token_strings()[256:]), set(hf.get_vocab()) - set(bpe.token_strings()[:256])
    overlap = len(mine_tokens & hf_vocab) / max(1, len(mine_tokens))
    report.metric("bpe_vocab_size", bpe.vocab_size)
    report.metric("hf_vocab_size", hf.get_vocab_size())
    report.metric("bpe_vocab_overlap", overlap)
    report.metric("bpe_tokens_per_char", len(mine_ids) / len(heldout))
    report.metric("hf_tokens_per_char", len(hf_ids) / len(heldout))
    report.metric("bpe_same_tokens_as_hf", float(mine_ids == hf_ids))

    samples = [heldout[:500], "Hello, wörld! 👋🏽 日本語のテキスト — ÇA VA? 🤖\n\ttabs\u200band zero-width", "🙂" * 7,
               "x", "   leading and trailing spaces   "]
    round_trip = all(bpe.decode(bpe.encode(s)) == s for s in samples) and bpe.decode(mine_ids) == heldout
    report.check("bpe_round_trip", round_trip, "decode(encode(text)) == text for held-out text, emoji, CJK, "
                 "accents and odd whitespace", str(round_trip))
    errors = []
    for bad in ("", b"\xff\xfe not utf-8"):
        try:
            bpe.encode(bad)
            errors.append("no error")
        except TokenizerError as exc:
            errors.append(str(exc))
    report.check("bpe_rejects_bad_input", "no error" not in errors,
                 "empty text and invalid UTF-8 raise TokenizerError (a ValueError)", "; ".join(errors))
    report.check("bpe_vocab_overlap", overlap >= config.min_bpe_vocab_overlap,
                 f"share of my merged tokens also in the HF vocabulary >= {config.min_bpe_vocab_overlap}", overlap)
    example = "To be, or not to be, that is the question."
    report.table("BPE tokens of an example line", [
        {"tokenizer": "mine", "tokens": " | ".join(bpe.decode([i], errors="replace") for i in bpe.encode(example)),
         "n": len(bpe.encode(example))},
        {"tokenizer": "HF tokenizers", "tokens": " | ".join(hf.decode([i]) for i in hf.encode(example).ids),
         "n": len(hf.encode(example).ids)},
    ])
    report.note(
        f"BPE: byte-level, GPT-2-style pre-tokenisation, {bpe.vocab_size - 256} merges learned on the first "
        f"{len(train):,} characters of tiny Shakespeare; tokens per character measured on the next "
        f"{len(heldout):,} (held out). Hugging Face tokenizers' ByteLevel BPE got the same vocabulary size, "
        "corpus and min_frequency 2; the overlap is the share of my merged (multi-byte) tokens that also "
        "appear in its vocabulary (bytes written in GPT-2's byte-to-unicode form)."
    )


def _word2vec(report: Report, config: Config, text: str, device: Any, progress: Progress) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from mastery.text.word2vec import build_corpus, nearest_neighbours, train_word2vec

    corpus = build_corpus(text[: config.w2v_chars] if config.w2v_chars else text, config.w2v_min_count)
    result = train_word2vec(corpus, dim=config.w2v_dim, window=config.w2v_window, negatives=config.w2v_negatives,
                            epochs=config.w2v_epochs, batch_size=config.w2v_batch_size, lr=config.w2v_lr,
                            seed=config.seed, device=device, progress=progress)
    report.timing("w2v_train_seconds", result.seconds)
    report.metric("w2v_vocab_size", len(corpus.words))
    report.metric("w2v_pairs", result.n_pairs)
    report.metric("w2v_first_loss", result.losses[0])
    report.metric("w2v_final_loss", result.losses[-1])
    report.check("w2v_loss_decreases", result.losses[-1] < result.losses[0],
                 "negative-sampling loss falls during training", result.losses[-1])
    index = corpus.index
    rows = []
    for w in NEIGHBOUR_WORDS:
        if w in index:
            nn = nearest_neighbours(result.embeddings, corpus.words, w, k=6)
            rows.append({"word": w, "count": int(corpus.counts[index[w]]),
                         "nearest neighbours (cosine)": ", ".join(f"{n} {s:.2f}" for n, s in nn)})
    report.table("word2vec nearest neighbours", rows)

    words = [w for w in PLOT_WORDS if w in index]
    xy = PCA(n_components=2, random_state=config.seed).fit_transform(result.embeddings[[index[w] for w in words]])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    axes[0].plot(result.loss_batches, result.losses)
    axes[0].set(xlabel="batch", ylabel="loss", title="Skip-gram negative-sampling loss")
    axes[1].scatter(xy[:, 0], xy[:, 1], s=12)
    for (x, y), w in zip(xy, words, strict=True):
        axes[1].annotate(w, (x, y), fontsize=9, xytext=(3, 3), textcoords="offset points")
    axes[1].set(title=f"PCA of {len(words)} word vectors (dim {config.w2v_dim})", xlabel="PC 1", ylabel="PC 2")
    report.figure("word2vec", fig)
    report.note(
        f"word2vec: skip-gram with {config.w2v_negatives} negatives (unigram^0.75), dynamic window up to "
        f"{config.w2v_window}, frequent-word subsampling (t = 1e-3), {config.w2v_epochs} epochs over tiny "
        f"Shakespeare ({len(corpus.ids):,} tokens, {len(corpus.words):,} words seen >= {config.w2v_min_count} "
        "times), Adam. On a 1 MB corpus neighbours are noisy but topical (kin terms, titles, numbers cluster)."
    )


def _sentiment(report: Report, config: Config, device: str, progress: Progress) -> None:
    import numpy as np

    from mastery.assets.loaders import balanced_subset, load_imdb
    from mastery.text.embed import encode_texts, load_sentence_model, logreg_head, tfidf_logreg, throughput

    df = load_imdb()
    train = balanced_subset(df[df.split == "train"], config.n_train, config.seed)
    test = balanced_subset(df[df.split == "test"], config.n_test, config.seed)
    y_train, y_test = train.label.to_numpy(), test.label.to_numpy()
    report.metric("n_train", len(train))
    report.metric("n_test", len(test))

    progress.stage("TF-IDF + logistic regression", None)
    tfidf, tfidf_seconds = tfidf_logreg(train.text.tolist(), y_train, test.text.tolist(), y_test, seed=config.seed)
    report.timing("tfidf_total_seconds", tfidf_seconds)

    progress.stage("MiniLM embeddings", None)
    start = time.perf_counter()
    model = load_sentence_model("all-minilm-l6-v2", device=device, max_seq_length=config.max_seq_length)
    report.timing("embed_model_load_seconds", time.perf_counter() - start)
    probe = train.text.tolist()[: min(64, len(train))]
    report.timing("embed_throughput_texts_per_second", throughput(model, probe, config.embed_batch_size))
    start = time.perf_counter()
    x_train = encode_texts(model, train.text.tolist(), config.embed_batch_size)
    x_test = encode_texts(model, test.text.tolist(), config.embed_batch_size)
    encode_seconds = time.perf_counter() - start
    embed = logreg_head(x_train, y_train, x_test, y_test, c=4.0, seed=config.seed)
    report.timing("embed_encode_seconds", encode_seconds)
    report.timing("embed_total_seconds", encode_seconds + embed.fit_seconds)
    # Rounded: sentence-transformers batches on CPU can differ in the last float bits between machines.
    report.metric("embed_f1", round(embed.f1, 6))
    report.metric("embed_accuracy", round(embed.accuracy, 6))
    report.metric("tfidf_f1", tfidf.f1)
    report.metric("tfidf_accuracy", tfidf.accuracy)
    report.check("embed_f1", embed.f1 >= config.min_embed_f1, f"MiniLM + logistic regression F1 >= "
                 f"{config.min_embed_f1}", embed.f1)
    report.check("tfidf_f1", tfidf.f1 >= config.min_tfidf_f1, f"TF-IDF + logistic regression F1 >= "
                 f"{config.min_tfidf_f1}", tfidf.f1)
    truncated = float(np.mean([len(model.tokenizer(t, verbose=False)["input_ids"]) > config.max_seq_length
                               for t in test.text.tolist()[:200]]))
    report.table("IMDb sentiment (held-out test subset)", [
        {"model": "MiniLM-L6 embeddings (384-d) + logistic regression", "F1": embed.f1, "accuracy": embed.accuracy,
         "seconds": encode_seconds + embed.fit_seconds, "timed": "encode train+test, fit, predict"},
        {"model": "TF-IDF 1-2 grams + logistic regression", "F1": tfidf.f1, "accuracy": tfidf.accuracy,
         "seconds": tfidf_seconds, "timed": "vectorise train+test, fit, predict"},
    ])
    report.note(
        f"Sentiment: stratified subsets of {len(train):,} IMDb training and {len(test):,} test reviews (of 25,000 "
        f"each), because encoding with MiniLM on this CPU runs at about "
        f"{report.timings['embed_throughput_texts_per_second']:.0f} reviews/s at max_seq_length "
        f"{config.max_seq_length}; about {truncated:.0%} of test reviews are longer and get truncated. "
        "Both classifiers see exactly the same reviews. The sentence model is all-MiniLM-L6-v2 from the local "
        "registry (loaded offline); its 384-d normalised mean-pooled embeddings feed a logistic regression."
    )
    better = "MiniLM embeddings" if embed.f1 > tfidf.f1 else "TF-IDF"
    report.note(
        f"Here {better} wins (F1 {embed.f1:.3f} MiniLM vs {tfidf.f1:.3f} TF-IDF), and TF-IDF is about "
        f"{(encode_seconds + embed.fit_seconds) / max(tfidf_seconds, 1e-9):.0f}x faster on CPU. A frozen, "
        "general-purpose sentence embedding of a truncated review compresses away many of the sentiment words "
        "that a supervised bag-of-n-grams model weights directly. Sentence embeddings earn their keep in semantic "
        "search, clustering and transfer across domains; for in-domain sentiment with thousands of labels, "
        "fine-tuning the encoder (not just a head on frozen vectors) is what beats TF-IDF."
    )
