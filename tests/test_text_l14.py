"""L14 building blocks: the hand-written LSTM, gradient flow, the character LM helpers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mastery.text import charlm
from mastery.text.rnn import ScratchLSTM, gradient_through_time, make_recurrent
from tests.conftest import needs_mirror


@pytest.mark.parametrize("layer", [0, 1])
def test_scratch_lstm_matches_nn_lstm(layer):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 10, num_layers=2, batch_first=True)
    cell = ScratchLSTM.from_torch(lstm, layer=layer)
    in_size = 6 if layer == 0 else 10
    x = torch.randn(3, 17, in_size)  # (B, T, I)
    h0, c0 = torch.randn(1, 3, 10), torch.randn(1, 3, 10)
    one = torch.nn.LSTM(in_size, 10, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{layer}"))
        ref, (h_ref, c_ref) = one(x, (h0, c0))
        mine, (h_mine, c_mine) = cell(x, (h0, c0))
    assert mine.shape == ref.shape == (3, 17, 10)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_mine, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c_mine, c_ref, atol=1e-5, rtol=0)


def test_scratch_lstm_gradients_match():
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(4, 8, batch_first=True)
    cell = ScratchLSTM.from_torch(lstm)
    x = torch.randn(2, 9, 4)
    lstm(x)[0].sum().backward()
    cell(x)[0].sum().backward()
    torch.testing.assert_close(cell.weight_hh.grad, lstm.weight_hh_l0.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(cell.bias_ih.grad, lstm.bias_ih_l0.grad, atol=1e-5, rtol=0)


def test_from_torch_rejects_bidirectional():
    with pytest.raises(ValueError, match="unidirectional"):
        ScratchLSTM.from_torch(torch.nn.LSTM(3, 4, bidirectional=True))


def test_tanh_rnn_gradient_vanishes_faster_than_lstm():
    torch.manual_seed(0)
    x = torch.randn(8, 60, 32)
    targets = torch.randint(0, 5, (8,))
    ratios = {}
    for kind in ("rnn", "lstm"):
        torch.manual_seed(0)
        rnn, head = make_recurrent(kind, 32, 32), torch.nn.Linear(32, 5)
        g = gradient_through_time(rnn, x, head, targets)
        assert g.shape == (60,) and bool(torch.all(g > 0))
        assert g[-1] > g[0]  # the last input is closest to the loss
        ratios[kind] = float(g[0] / g[-1])
    assert ratios["lstm"] > 100 * ratios["rnn"]


def test_make_recurrent_unknown_kind():
    with pytest.raises(ValueError, match="unknown recurrent kind"):
        make_recurrent("transformer", 3, 4)


def test_decode_utf8_errors_are_clear():
    assert charlm.decode_utf8("héllo".encode()) == "héllo"
    with pytest.raises(ValueError, match="empty"):
        charlm.decode_utf8(b"")
    with pytest.raises(ValueError, match=r"not valid UTF-8.*byte 2"):
        charlm.decode_utf8(b"ab\xff\xfecd", "shakespeare.txt")


def test_vocabulary_round_trip_and_errors():
    vocab = charlm.CharVocabulary("hello world")
    assert vocab.size == 8 and vocab.chars[0] == " "
    ids = vocab.encode("low")
    assert ids.dtype == np.int64 and vocab.decode(ids) == "low"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("z")
    with pytest.raises(ValueError, match="empty"):
        charlm.CharVocabulary("")
    with pytest.raises(TypeError, match="decode_utf8"):
        charlm.CharVocabulary(b"bytes")


def test_split_and_batches():
    ids = np.arange(100)
    train, val = charlm.train_val_split(ids)
    assert len(train) == 90 and val[0] == 90
    gen = torch.Generator().manual_seed(0)
    x, y = charlm.random_batch(torch.from_numpy(train), 4, 10, gen)
    assert x.shape == y.shape == (4, 10)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    with pytest.raises(ValueError, match="too few"):
        charlm.train_val_split(np.arange(5))


def test_repeated_ngram_rate():
    assert charlm.repeated_ngram_rate("abcdefgh", 4) == 0.0
    assert charlm.repeated_ngram_rate("abababab", 2) == pytest.approx(1 - 2 / 7)
    assert charlm.repeated_ngram_rate(["the", "cat"] * 3, 3) == pytest.approx(1 - 2 / 4)
    assert charlm.repeated_ngram_rate("ab", 4) == 0.0


def test_warmup_cosine_schedule():
    assert charlm.warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert charlm.warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert charlm.warmup_cosine(100, 100, 10) == pytest.approx(0.1)


def test_char_lm_learns_and_samples():
    text = "to be or not to be, that is the question. " * 40
    vocab = charlm.CharVocabulary(text)
    train, val = charlm.train_val_split(vocab.encode(text))
    train_t, val_t = torch.from_numpy(train), torch.from_numpy(val)
    torch.manual_seed(0)
    model = charlm.CharRNN(vocab.size, kind="gru", embed=8, hidden=32, num_layers=1)
    before = charlm.evaluate_loss(model, val_t, 16, "cpu")
    hist = charlm.train_charlm(model, train_t, val_t, steps=60, batch_size=16, seq_len=16, lr=1e-2,
                               weight_decay=0.0, grad_clip=1.0, warmup=5, eval_every=30, eval_windows=None,
                               device="cpu", bf16=False, seed=0)
    after = charlm.evaluate_loss(model, val_t, 16, "cpu")
    assert hist.steps == [30, 60] and len(hist.train_loss) == 60
    assert after < before - 1.0
    assert hist.val_loss[-1] == pytest.approx(after)
    gen = torch.Generator().manual_seed(0)
    out = charlm.sample(model, vocab, "to ", 50, 0.5, gen, "cpu")
    assert len(out) == 50 and set(out) <= set(vocab.chars)
    with pytest.raises(ValueError, match="temperature"):
        charlm.sample(model, vocab, "to ", 5, 0.0, gen, "cpu")


def test_repetition_is_measured_on_character_4_grams():
    looping = "the king the king the king the king "
    stats = charlm.repetition_stats(looping)
    assert stats["char4"] == pytest.approx(charlm.repeated_ngram_rate(looping, 4))
    assert stats["char4"] > 0.6 > charlm.repetition_stats("a quick brown fox jumps over the lazy dog")["char4"]


# Both runs in one interpreter: the cap must be set before oneDNN starts, so it needs its own process.
_AVX2_RUNS = """
import json
from mastery.core.config import apply_overrides
from mastery.core.labs import load_lab, run_lab
lab = load_lab("l14")
out = {}
# bf16=on only has to train without crashing: a shorter run, no GRU
for choice, extra in (("auto", []), ("on", ["steps=20", "gru=false", "max_val_loss=10"])):
    report = run_lab(lab, apply_overrides(lab.config("tiny"), [f"bf16={choice}", *extra]), "tiny")
    out[choice] = {"device": report.device, "notes": report.notes, "passed": report.passed,
                   "metrics": sorted(report.metrics)}
print(json.dumps(out))
"""


@needs_mirror
def test_tiny_preset_on_an_avx2_only_cpu_trains_in_float32(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 limits oneDNN to an AVX2 CPU's kernels: bf16 autocast of an LSTM then fails
    ("could not create a primitive descriptor"), so auto must choose float32 and even bf16=on must not autocast."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", _AVX2_RUNS], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    for choice, run in runs.items():
        assert run["passed"], choice
        assert run["device"].endswith(", float32"), run["device"]
        precision = [n for n in run["notes"] if n.startswith(f"Precision (`bf16={choice}`)")]
        # the reason names whichever limit it met first: the oneDNN cap set here, a torch dispatch cap set
        # around the test (a CI emulating AVX2), or a CPU that really lacks bf16
        assert len(precision) == 1 and "autocast off" in precision[0], precision
        assert any(why in precision[0] for why in ("ONEDNN_MAX_CPU_ISA=AVX2", "ATEN_CPU_CAPABILITY",
                                                   "lacks AVX512-BF16/AMX")), precision[0]
    assert "LSTM" in next(n for n in runs["on"]["notes"] if n.startswith("Precision"))
    # One repetition metric per temperature, on character 4-grams; the word 3-gram and char4_ names are gone.
    metrics = runs["auto"]["metrics"]
    assert {"repeat_rate_t0.5", "repeat_rate_t1.2", "repeat_rate_val_text"} <= set(metrics)
    assert not [m for m in metrics if m.startswith("char4_")]
