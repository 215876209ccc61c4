"""L16: BERT's masking rule, the MLM trainer on a learnable toy language, and fine-tuning's input checks."""

import pytest
import torch

from mastery.finetune.classify import FineTuneError, FineTuneSettings, finetune_classifier, head_tail_ids
from mastery.text.mlm import (
    IGNORE,
    MLMError,
    MLMSpec,
    PieceVocabulary,
    mask_tokens,
    pack_sequences,
    text_blocks,
    train_mlm,
)

SPEC = MLMSpec(vocab_size=50, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4), max_len=64, hidden=32, layers=1,
               heads=2, intermediate=64, dropout=0.0)


def test_mask_tokens_follows_bert_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (400, 64), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    attention = torch.ones_like(ids)
    attention[:100, 40:] = 0
    ids[:100, 40:] = 0  # padding
    inputs, labels = mask_tokens(ids, attention, SPEC, g)
    chosen = labels != IGNORE
    maskable = (attention == 1) & (ids >= 5)
    assert not (chosen & ~maskable).any(), "specials and padding are never chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    share = chosen.sum() / maskable.sum()
    assert 0.14 < share < 0.16
    masked = (inputs[chosen] == SPEC.mask_id).float().mean()
    unchanged = (inputs[chosen] == ids[chosen]).float().mean()
    assert 0.77 < masked < 0.83 and 0.08 < unchanged < 0.13  # 10% kept + random draws that hit the same id
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert chosen.any(dim=1).all(), "every sequence predicts at least one token"


def test_mlm_learns_a_predictable_language():
    # Each sequence repeats one random token: a masked token is predictable from any unmasked one.
    import random

    rng = random.Random(0)
    seqs = [[2] + [t] * 20 + [3] for t in (rng.randrange(5, 50) for _ in range(320))]
    spec = MLMSpec(**{**SPEC.__dict__, "max_len": 24})
    result = train_mlm(seqs, seqs[:40], spec, epochs=10, batch_size=16, lr=5e-3, bf16=False, seed=0)
    assert result.losses[-1] < result.losses[0]
    assert result.eval_accuracy[0] < 0.3 and result.eval_accuracy[-1] > 0.9, result.eval_accuracy
    once = [train_mlm(seqs[:64], seqs[:16], spec, epochs=1, batch_size=16, seed=3, bf16=False) for _ in range(2)]
    assert once[0].eval_accuracy == once[1].eval_accuracy and once[0].losses == once[1].losses


@pytest.mark.parametrize("bad", [[], [[]], [[1, 2, 99]], [[-1, 5]]])
def test_mlm_rejects_bad_sequences(bad):
    with pytest.raises(MLMError):
        pack_sequences(bad, SPEC)


def test_mlm_spec_checks_ids_and_heads():
    with pytest.raises(MLMError, match="special ids"):
        MLMSpec(vocab_size=10, pad_id=0, mask_id=12).validate()
    with pytest.raises(MLMError, match="divisible"):
        MLMSpec(vocab_size=10, pad_id=0, mask_id=1, hidden=30, heads=4).validate()


def test_piece_vocabulary_front_end():
    from transformers import AutoTokenizer

    from mastery.assets.store import resolve

    bert = AutoTokenizer.from_pretrained(str(resolve("all-minilm-l6-v2")), local_files_only=True)
    texts = ["A wonderful film, truly wonderful!", "A dreadful film; dreadful acting."] * 20
    vocab = PieceVocabulary(bert, texts, size=12)
    assert vocab.vocab_size == 12 and vocab.pieces[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab.pieces[5:8] == ["a", "film", "wonderful"]  # most frequent first, ties by BERT id
    again = PieceVocabulary(bert, texts, size=12)
    assert again.pieces == vocab.pieces, "deterministic"
    spec = vocab.spec(max_len=8)
    assert spec.mask_id == vocab.token_to_id("[MASK]") and spec.pad_id == 0
    blocks = text_blocks(vocab, texts, block_len=8)
    assert blocks and all(len(b) <= 8 and b[0] == 2 and b[-1] == 3 and max(b) < 12 for b in blocks)
    assert 1 in vocab.encode(["zebra"])[0], "out-of-vocabulary pieces become [UNK]"
    for bad in (["", "   "], [b"\xff\xfe bytes"]):
        with pytest.raises(MLMError):
            PieceVocabulary(bert, bad)


def test_head_tail_truncation():
    ids = list(range(10))
    assert head_tail_ids(ids, 10, 3) == ids
    assert head_tail_ids(ids, 6, 2) == [0, 1, 6, 7, 8, 9]
    assert head_tail_ids(ids, 4, 4) == [0, 1, 2, 3]
    assert head_tail_ids(ids, 4, 0) == [6, 7, 8, 9]


def test_finetune_rejects_bad_input(tmp_path):
    settings = FineTuneSettings()
    with pytest.raises(FineTuneError, match="differ in length"):
        finetune_classifier(tmp_path, ["good"], [1, 0], ["bad"], [0], settings)
    with pytest.raises(FineTuneError, match="labels must be"):
        finetune_classifier(tmp_path, ["good", "fine"], [1, 1], ["bad"], [0], settings)
    with pytest.raises(FineTuneError, match="not a Hugging Face model folder"):
        finetune_classifier(tmp_path, ["good", "bad"], [1, 0], ["bad"], [0], settings)
