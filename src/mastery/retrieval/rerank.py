"""Re-ranking scorers: a bi-encoder (cosine of separate embeddings) and a cross-encoder.

A bi-encoder embeds query and passage separately and compares vectors; a cross-encoder reads
them together ("[CLS] query [SEP] passage [SEP]") and outputs one relevance logit, so every
query word can attend to every passage word. That is more accurate and much slower: one
transformer pass per (query, candidate) pair, which is why it only re-orders a first stage's top-k.

No cross-encoder ships offline, so :func:`train_cross_encoder` fine-tunes one from the local
all-MiniLM-L6-v2 encoder on (question, positive, hard negatives) groups with a listwise softmax loss
(localised contrastive estimation, Gao et al. 2021), saves it as safetensors and
:func:`load_cross_encoder` reads it back. :func:`canonical_cross_encoder` returns the ms-marco
MiniLM cross-encoder's folder when the asset registry has it, else None (and says so).

The L20 lab registers its fine-tuned model in the trained-model registry as :data:`ATTACK_CROSS_ENCODER`;
:func:`find_cross_encoder` is how searches pick a re-ranker: that model when registered, else the canonical
one when present, else None (the search then runs without re-ranking).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastery.core.errors import AssetError, ConfigError, MasteryError
from mastery.core.progress import NullProgress, Progress
from mastery.retrieval.bm25 import RetrievalError

log = logging.getLogger(__name__)

CANONICAL_CROSS_ENCODER = "ms-marco-minilm-l6-v2"  # registry name a canonical cross-encoder would have
ATTACK_CROSS_ENCODER = "attack-cross-encoder"  # L20's fine-tuned model in the trained-model registry
DEFAULT_MAX_LENGTH = 160  # L20 trains and scores pairs cut to 160 word pieces (question + passage opening)
BASE_ENCODER = "all-minilm-l6-v2"


class RerankerError(MasteryError):
    """A re-ranker could not be trained or loaded (bad training data, a missing or broken model folder)."""


@contextlib.contextmanager
def _autocast(device: str, bf16: bool) -> Iterator[None]:
    """bf16 autocast on CPU (about 3x faster matmuls on AVX512-BF16 / AMX cores) or CUDA; no-op otherwise."""
    import torch

    if not bf16:
        yield
        return
    with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
        yield


class BiEncoderScorer:
    """Cosine similarity of sentence embeddings: the dense retriever's own judgement, as a re-ranker.

    ``known`` maps passage text to an embedding already computed (the indexed documents), so
    re-ranking only encodes the query.
    """

    name = "bi-encoder"

    def __init__(self, model: Any, known: dict[str, np.ndarray] | None = None, batch_size: int = 32) -> None:
        self.model, self.known, self.batch_size = model, known or {}, batch_size

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        from mastery.text.embed import encode_texts

        if not query.strip():
            raise RetrievalError("the query is empty; ask a question or give some keywords")
        if not texts:
            return np.zeros(0)
        q = encode_texts(self.model, [query])  # (1, dim)
        missing = [t for t in dict.fromkeys(texts) if t not in self.known]
        fresh = dict(zip(missing, encode_texts(self.model, missing, self.batch_size), strict=True)) if missing else {}
        p = np.stack([self.known[t] if t in self.known else fresh[t] for t in texts])  # (N, dim)
        return (p @ q[0]).astype(np.float64)  # (N,)


class CrossEncoderScorer:
    """Relevance logits of a sentence-transformers ``CrossEncoder`` for (query, passage) pairs."""

    def __init__(self, model: Any, batch_size: int = 32, bf16: bool = False, name: str = "cross-encoder") -> None:
        self.model, self.batch_size, self.bf16, self.name = model, batch_size, bf16, name

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        import torch

        if not query.strip():
            raise RetrievalError("the query is empty; ask a question or give some keywords")
        if not texts:
            return np.zeros(0)
        pairs = [(query, t) for t in texts]
        with torch.inference_mode(), _autocast(str(self.model.device), self.bf16):
            # Raw logits (no sigmoid): same order, and no saturation ties at 0.0 / 1.0.
            out = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                     activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        return np.asarray(out, dtype=np.float64).reshape(-1)


# -- the canonical model, when registered -----------------------------------------------------------
def canonical_cross_encoder(name: str = CANONICAL_CROSS_ENCODER) -> tuple[Path | None, str]:
    """(folder, why) of the canonical ms-marco cross-encoder: a path when registered and present, else None."""
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import resolve

    try:
        asset = get_asset(name)
    except AssetError:
        return None, f"'{name}' is not in the asset registry"
    try:
        return resolve(asset, fetch=False), f"'{name}' found in the registry and present locally"
    except AssetError as exc:
        return None, f"'{name}' is registered but not available offline ({exc})"


def registered_cross_encoder(name: str = ATTACK_CROSS_ENCODER, device: str = "auto") -> CrossEncoderScorer | None:
    """The trained-model registry's cross-encoder ``name`` as a scorer, or None when it is not registered.

    Loading verifies every file's sha256 (:meth:`mastery.ops.registry.ModelRegistry.load`): a modified model is
    a :class:`~mastery.core.errors.ModelIntegrityError`, never a silent fallback to no re-ranking."""
    from mastery.core.runtime import torch_device
    from mastery.ops.registry import open_registry

    registry = open_registry()
    if not registry.exists(name):
        log.info("no %r in the model registry at %s: searches run without it", name, registry.location)
        return None
    loaded = registry.load(name)
    helps, why = measured_gain(loaded.metrics)
    if not helps:
        log.info("re-ranker %s not used: %s", loaded.ref, why)
        return None
    max_length = int(loaded.config.get("ce_max_length") or loaded.config.get("max_length") or DEFAULT_MAX_LENGTH)
    model = load_cross_encoder(loaded.path, torch_device(device), max_length)
    log.info("re-ranker: %s from the model registry (max_length %d)", loaded.ref, max_length)
    # float32 scoring: bf16 rounds logits differently per device, and near-ties would then order hits
    # differently on different machines; 20 pairs per query cost little either way.
    return CrossEncoderScorer(model, name=str(loaded.ref))


def measured_gain(metrics: dict[str, Any]) -> tuple[bool, str]:
    """Whether L20 measured the re-ranker beating the hybrid order it re-ranks by more than the noise.

    The gain in recall@3 must exceed two standard errors of the hybrid recall over the evaluation questions.
    Measured: a cross-encoder that gained +0.022 on 500 questions (one standard error is 0.020) pushed the
    Scheduled Task, Registry Run Keys and DNS techniques out of the agents' top hits, and L23's clean reports
    fell from 0.8 to 0.4; a re-ranker is worth its 0.2 s per query only when it clearly helps.
    """
    try:
        hybrid = float(metrics["recall_at_3_hybrid"])
        gain = float(metrics["recall_at_3_hybrid_rerank"]) - hybrid
        n = int(metrics["n_eval_questions"])
    except (KeyError, TypeError, ValueError):
        return False, "its manifest records no recall@3 gain over the hybrid order (re-register it with L20)"
    noise = 2 * math.sqrt(max(hybrid * (1 - hybrid), 1e-9) / max(n, 1))
    if gain <= noise:
        return False, f"recall@3 gain over hybrid {gain:+.3f} on {n} questions is within noise (2 SE = {noise:.3f})"
    return True, f"recall@3 gain over hybrid {gain:+.3f} on {n} questions (2 SE = {noise:.3f})"


def find_cross_encoder(device: str = "auto") -> CrossEncoderScorer | None:
    """The re-ranker searches use: the registry's :data:`ATTACK_CROSS_ENCODER`, else the canonical ms-marco
    cross-encoder when the asset registry has it locally, else None."""
    scorer = registered_cross_encoder(device=device)
    if scorer is not None:
        return scorer
    path, why = canonical_cross_encoder()
    if path is None:
        log.info("no canonical cross-encoder either: %s", why)
        return None
    from mastery.core.runtime import torch_device

    return CrossEncoderScorer(load_cross_encoder(path, torch_device(device), 256), name=CANONICAL_CROSS_ENCODER)


def load_cross_encoder(path: str | Path, device: str = "cpu", max_length: int = 256) -> Any:
    """A CrossEncoder from a local folder (never downloads); a clear error when it is not one."""
    from sentence_transformers import CrossEncoder

    path = Path(path)
    if not (path / "config.json").is_file():
        raise RerankerError(f"no cross-encoder at {path} (config.json missing); train one or pass a model folder")
    try:
        return CrossEncoder(str(path), device=device, max_length=max_length, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RerankerError(f"could not load the cross-encoder at {path}: {exc}") from exc


# -- training -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainGroup:
    """One training example: a query, its relevant passage and passages that look relevant but are not."""

    query: str
    positive: str
    negatives: tuple[str, ...]


@dataclass
class TrainResult:
    path: Path
    seconds: float
    n_groups: int
    n_pairs: int
    steps: int
    losses: list[float] = field(default_factory=list)  # per optimiser step
    model: Any = None  # the trained CrossEncoder, still in memory


def new_cross_encoder(base: str = BASE_ENCODER, head: str = "cls", max_length: int = 256, device: str = "cpu") -> Any:
    """An untrained 1-logit CrossEncoder on top of the registry encoder ``base``.

    ``head="cls"``: the standard BertForSequenceClassification (tanh pooler + linear on [CLS]).
    ``head="mean"``: mean pooling over the pair's tokens + a zero-initialised linear layer. all-MiniLM-L6-v2
    was trained as a mean-pooling bi-encoder, so its mean-pooled states already carry meaning, while its
    [CLS] state and pooler were never trained for anything; the zero init makes every score equal at step 0.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from mastery.assets.store import resolve

    path = str(resolve(base))
    if head == "cls":
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device, local_files_only=True)
    if head != "mean":
        raise ConfigError(f"cross-encoder head must be 'mean' or 'cls', got {head!r}")
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    encoder = Transformer(path, transformer_task="feature-extraction", max_seq_length=max_length,
                          model_kwargs={"local_files_only": True}, processor_kwargs={"local_files_only": True},
                          config_kwargs={"local_files_only": True})
    dim = encoder.get_embedding_dimension()
    score = Dense(dim, 1, activation_function=torch.nn.Identity(), init_weight=torch.zeros(1, dim),
                  init_bias=torch.zeros(1), module_output_name="scores")
    return CrossEncoder(modules=[encoder, Pooling(dim, "mean"), score], device=device)


def train_cross_encoder(groups: Sequence[TrainGroup], out_dir: str | Path, *, base: str = BASE_ENCODER,
                        head: str = "cls", epochs: int = 1, groups_per_batch: int = 2, lr: float = 5e-5,
                        head_lr: float | None = None, warmup: float = 0.1, max_length: int = 256, bf16: bool = False,
                        device: str = "cpu", seed: int = 0, progress: Progress | None = None) -> TrainResult:
    """Fine-tune a 1-logit cross-encoder from ``base`` and save it (safetensors) to ``out_dir``.

    Loss per group: cross-entropy of softmax over [positive, negatives...] logits with the positive
    as the target, i.e. the model must put the true passage above the hard negatives of the same
    query. AdamW, linear warm-up then linear decay, gradients clipped at norm 1.
    """
    import torch

    groups = [g for g in groups if g.negatives]
    if not groups:
        raise RerankerError("training a cross-encoder needs at least one group with a negative passage")
    if epochs < 1 or groups_per_batch < 1 or lr <= 0 or max_length < 16:
        raise ConfigError("epochs and groups_per_batch must be >= 1, lr > 0 and max_length >= 16")
    progress = progress or NullProgress()
    torch.manual_seed(seed)  # the new head's initialisation and dropout masks
    model = new_cross_encoder(base, head, max_length, device)
    rng = random.Random(seed)
    steps = epochs * math.ceil(len(groups) / groups_per_batch)
    # The head is new to this task, so it may take a larger step size than the pretrained encoder layers.
    is_head = [("classifier" in n or "pooler" in n or not n.startswith("0.")) for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    opt = torch.optim.AdamW([{"params": [p for p, h in zip(params, is_head, strict=True) if not h], "lr": lr},
                             {"params": [p for p, h in zip(params, is_head, strict=True) if h], "lr": head_lr or lr}],
                            weight_decay=0.01)
    n_warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / n_warm, max(0.0, (steps - s) / max(1, steps - n_warm))))
    losses: list[float] = []
    progress.stage("train cross-encoder", steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = list(range(len(groups)))
        rng.shuffle(order)
        for b in range(0, len(order), groups_per_batch):
            batch = [groups[i] for i in order[b:b + groups_per_batch]]
            pairs = [(g.query, p) for g in batch for p in (g.positive, *g.negatives)]
            # The model's own preprocessing (truncates the passage, never the query): training sees what predict sees.
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in model.preprocess(pairs).items()}
            with _autocast(device, bf16):
                logits = model(features)["scores"].reshape(-1).float()  # (pairs in batch,)
            loss = torch.zeros((), device=device)
            offset = 0
            for g in batch:  # listwise softmax: the positive (index 0 of each group) against its negatives
                n = 1 + len(g.negatives)
                loss = loss + torch.nn.functional.cross_entropy(logits[offset:offset + n][None],
                                                                torch.zeros(1, dtype=torch.long, device=device))
                offset += n
            loss = loss / len(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            progress.step(1, loss=losses[-1])
    model.eval()
    seconds = time.perf_counter() - start
    path = save_cross_encoder(model, out_dir)
    log.info("cross-encoder: %d groups, %d steps in %.0f s -> %s", len(groups), len(losses), seconds, path)
    return TrainResult(path=path, seconds=seconds, n_groups=len(groups),
                       n_pairs=sum(1 + len(g.negatives) for g in groups) * epochs, steps=len(losses), losses=losses,
                       model=model)


def save_cross_encoder(model: Any, out_dir: str | Path) -> Path:
    """Save as safetensors plus the tokenizer and config, loadable with ``CrossEncoder(folder)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), safe_serialization=True, create_model_card=False)
    if not (out / "model.safetensors").is_file():
        raise RerankerError(f"saving the cross-encoder to {out} wrote no model.safetensors")
    return out


def hard_negative_groups(questions: Sequence[tuple[str, str]], texts: dict[str, str], candidates: Sequence[list[str]],
                         n_negatives: int, seed: int = 0) -> list[TrainGroup]:
    """Groups of (query, positive text, ``n_negatives`` texts sampled from the query's first-stage candidates).

    ``questions`` are (query, relevant doc id); ``candidates[i]`` the first stage's ranked doc ids
    for question i. Negatives come from the top of the list (the passages a re-ranker must beat);
    the relevant id is never used as a negative.
    """
    rng = random.Random(seed)
    groups = []
    for (query, doc_id), cands in zip(questions, candidates, strict=True):
        pool = [c for c in cands if c != doc_id]
        if not pool or doc_id not in texts:
            continue
        picked = rng.sample(pool, min(n_negatives, len(pool)))
        groups.append(TrainGroup(query, texts[doc_id], tuple(texts[c] for c in picked)))
    return groups
