"""Recurrent cells by hand: an LSTM written from its gate equations, and gradient flow through time.

``ScratchLSTM`` uses the same parameter layout as ``torch.nn.LSTM`` (one ``(4H, I)`` input matrix
and one ``(4H, H)`` recurrent matrix, gate blocks in the order input, forget, cell, output), so
``ScratchLSTM.from_torch(lstm)`` copies a trained layer and must reproduce its outputs.

``gradient_through_time`` measures vanishing gradients: the norm of d(loss at the last step) /
d(input at step t) for every earlier step t.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

log = logging.getLogger(__name__)


class ScratchLSTM(nn.Module):
    """One LSTM layer over a batch-first sequence, written out gate by gate.

    For each step t with input x_t (B, I) and state h (B, H), c (B, H):

        z   = x_t @ W_ih^T + b_ih + h @ W_hh^T + b_hh        # (B, 4H)
        i   = sigmoid(z[:, 0H:1H])   input gate              # (B, H)
        f   = sigmoid(z[:, 1H:2H])   forget gate             # (B, H)
        g   = tanh(z[:, 2H:3H])      cell candidate          # (B, H)
        o   = sigmoid(z[:, 3H:4H])   output gate             # (B, H)
        c'  = f * c + i * g                                  # (B, H)
        h'  = o * tanh(c')                                   # (B, H)
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's default: U(-1/sqrt(H), 1/sqrt(H))
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size).uniform_(-bound, bound))

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, layer: int = 0) -> ScratchLSTM:
        """A copy of layer ``layer`` of a (unidirectional, biased) ``nn.LSTM``."""
        if lstm.bidirectional or not lstm.bias or lstm.proj_size:
            raise ValueError("only unidirectional nn.LSTM layers with biases and no projection are supported")
        in_size = lstm.input_size if layer == 0 else lstm.hidden_size
        cell = cls(in_size, lstm.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                src = getattr(lstm, f"{name}_l{layer}")
                getattr(cell, name).copy_(src)
        return cell.to(lstm.weight_ih_l0.device, lstm.weight_ih_l0.dtype)

    def step(self, x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: x_t (B, I), h (B, H), c (B, H) -> (h', c'), each (B, H)."""
        z = x_t @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        zi, zf, zg, zo = z.chunk(4, dim=1)  # each (B, H), in nn.LSTM's gate order
        i = torch.sigmoid(zi)  # input gate: how much of the candidate to write
        f = torch.sigmoid(zf)  # forget gate: how much of the old cell to keep
        g = torch.tanh(zg)  # cell candidate
        o = torch.sigmoid(zo)  # output gate: how much of the cell to expose
        c_new = f * c + i * g  # (B, H) - the additive path gradients flow along
        h_new = o * torch.tanh(c_new)  # (B, H)
        return h_new, c_new

    def forward(self, x: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, I) -> (outputs (B, T, H), (h_T (1, B, H), c_T (1, B, H))), like nn.LSTM(batch_first=True)."""
        b = x.shape[0]
        if state is None:
            h = x.new_zeros(b, self.hidden_size)  # (B, H)
            c = x.new_zeros(b, self.hidden_size)  # (B, H)
        else:
            h, c = state[0][0], state[1][0]  # (1, B, H) -> (B, H)
        outputs = []
        for t in range(x.shape[1]):
            h, c = self.step(x[:, t], h, c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h.unsqueeze(0), c.unsqueeze(0))


def make_recurrent(kind: str, input_size: int, hidden_size: int, num_layers: int = 1,
                   dropout: float = 0.0) -> nn.Module:
    """``nn.LSTM``, ``nn.GRU`` or a tanh ``nn.RNN`` (kind 'lstm', 'gru', 'rnn'), batch-first."""
    classes = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    if kind not in classes:
        raise ValueError(f"unknown recurrent kind {kind!r}; choose lstm, gru or rnn")
    return classes[kind](input_size, hidden_size, num_layers, batch_first=True,
                         dropout=dropout if num_layers > 1 else 0.0)


def gradient_through_time(rnn: nn.Module, x: torch.Tensor, head: nn.Module, targets: torch.Tensor,
                          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per-step gradient norms of the last step's loss w.r.t. the inputs.

    x: (B, T, I) inputs, head: maps the last output (B, H) to logits (B, K), targets: (B,).
    Returns (T,): mean over the batch of || d loss(T-1) / d x_t ||_2 for t = 0 .. T-1. The input at
    step t reaches the loss only through the recurrence, so the curve shows how much signal survives
    T-1-t steps of backpropagation through time. Computed on copies in ``dtype`` (float64 by default: a tanh
    RNN's gradient falls below float32's range within ~60 steps).
    """
    import copy

    rnn, head = copy.deepcopy(rnn).to(dtype), copy.deepcopy(head).to(dtype)
    x = x.detach().to(dtype).clone().requires_grad_(True)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNNs refuse backward in eval mode
        out, _ = rnn(x)  # (B, T, H)
    loss = torch.nn.functional.cross_entropy(head(out[:, -1]), targets)
    (grad,) = torch.autograd.grad(loss, x)  # (B, T, I)
    return grad.norm(dim=2).mean(dim=0).detach()  # (T,)
