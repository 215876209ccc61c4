"""L15: hand-written attention against PyTorch's, positional encoding, and the reversal transformer."""

import math

import pytest
import torch
from torch import nn

from mastery.text.attention import (
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
)
from mastery.text.seq2seq import (
    EOS,
    CharVocab,
    Seq2SeqTransformer,
    exact_match,
    make_batch,
    random_strings,
    reverse_strings,
    train_reverser,
)


def _pair(d_model=16, heads=4, bias=True):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True, bias=bias)
    return ref, MultiHeadAttention(d_model, heads, bias=bias).load_from_torch(ref)


@pytest.mark.parametrize("case", ["none", "causal", "padding", "both", "per-example-3d"])
def test_multihead_attention_matches_torch(case):
    ref, mine = _pair()
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 5, 16, generator=g)
    kv = q if case in ("causal", "both") else torch.randn(2, 6, 16, generator=g)
    lk = kv.shape[1]
    attn_mask = causal_mask(5) if case in ("causal", "both") else None
    pad = None
    if case in ("padding", "both"):
        pad = torch.zeros(2, lk, dtype=torch.bool)
        pad[0, -2:] = True
    if case == "per-example-3d":  # a per-example (B, Lq, Lk) boolean mask; torch wants (B*H, Lq, Lk)
        attn_mask = torch.rand(2, 5, lk, generator=g) > 0.7
        attn_mask[..., 0] = False  # every query keeps at least one key
        ref_mask = attn_mask.repeat_interleave(4, dim=0)
    else:
        ref_mask = attn_mask
    with torch.no_grad():
        out_ref, w_ref = ref(q, kv, kv, attn_mask=ref_mask, key_padding_mask=pad, average_attn_weights=False)
        out, w = mine(q, kv, kv, attn_mask=attn_mask, key_padding_mask=pad)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, lk)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=0)
    if pad is not None:
        assert w[0, :, :, -2:].abs().max() == 0  # padded keys get no weight


def test_multihead_attention_without_bias_matches_torch():
    ref, mine = _pair(bias=False)
    x = torch.randn(3, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(mine(x, x, x)[0], ref(x, x, x)[0], atol=1e-5, rtol=0)


def test_scaled_dot_product_attention_against_formula_and_torch():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (4, 6, 6))
    out, w = scaled_dot_product_attention(q, k, v)
    expected_w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=0)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 3:] = True
    out_m, w_m = scaled_dot_product_attention(q, k, v, mask)
    assert w_m[..., 3:].abs().max() == 0
    torch.testing.assert_close(w_m.sum(-1), torch.ones(2, 3, 4))
    torch.testing.assert_close(out_m, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~mask),
                               atol=1e-5, rtol=0)


def test_causal_mask_blocks_the_future():
    m = causal_mask(4)
    assert m.tolist() == [[False, True, True, True], [False, False, True, True],
                          [False, False, False, True], [False, False, False, False]]


def test_sinusoidal_positional_encoding_values():
    pe = sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16)
    assert pe[0, 0::2].abs().max() == 0 and torch.allclose(pe[0, 1::2], torch.ones(8))
    p, i = 7, 3
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 16)), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 16)), abs=1e-6)
    assert sinusoidal_positional_encoding(5, 7).shape == (5, 7)  # odd widths work too


def test_mha_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)


def test_batch_layout_and_vocab():
    vocab = CharVocab()
    src, tgt_in, labels = make_batch(["abc", "z"], vocab)
    assert src.tolist() == [[3, 4, 5], [28, 0, 0]]
    assert tgt_in.tolist() == [[1, 5, 4, 3], [1, 28, 0, 0]]
    assert labels.tolist() == [[5, 4, 3, EOS], [28, EOS, 0, 0]]
    assert vocab.decode([5, 4, EOS, 3]) == "cb"
    assert exact_match(["cba", "x"], ["abc", "y"]) == 0.5


def test_decoder_is_causal():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(CharVocab().size, d_model=16, heads=2, layers=1, d_ff=32).eval()
    src = make_batch(["hello"], CharVocab())[0]
    a = torch.tensor([[1, 5, 6, 7]])
    b = torch.tensor([[1, 5, 9, 9]])
    with torch.no_grad():
        la, lb = model(src, a), model(src, b)
    torch.testing.assert_close(la[:, :2], lb[:, :2])  # changing later tokens cannot change earlier logits
    assert not torch.allclose(la[:, 2:], lb[:, 2:])


def test_small_transformer_learns_to_reverse():
    torch.manual_seed(0)
    vocab = CharVocab("abcd")
    model = Seq2SeqTransformer(vocab.size, d_model=32, heads=2, layers=1, d_ff=64)
    result = train_reverser(model, vocab, steps=600, batch_size=64, lr=3e-3, min_len=2, max_len=4, seed=0,
                            device="cpu")
    assert result.losses[-1] < 0.2 * result.losses[0]
    test = random_strings(100, 2, 4, torch.Generator().manual_seed(5), alphabet="abcd")
    assert exact_match(reverse_strings(model, vocab, test, "cpu"), test) > 0.8
