import numpy as np
import pytest

from mastery.nn.dense import (
    ShapeError,
    dense_forward,
    dense_forward_broadcast,
    dense_forward_dot,
    dense_forward_loops,
    relu,
)
from mastery.nn.numpy_mlp import TwoLayerNet, binary_cross_entropy, gradient_check, sigmoid, train


def test_dense_methods_agree():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    expected = x @ w + b
    for fn in (dense_forward, dense_forward_broadcast, dense_forward_dot, dense_forward_loops):
        np.testing.assert_allclose(fn(x, w, b), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("shapes", "fragment"),
    [(((5, 4), (3, 3), (3,)), "(5, 4) and W (3, 3) do not align"),
     (((5, 4), (4, 3), (2,)), "b (2,) does not match W (4, 3)"),
     (((5,), (4, 3), (3,)), "got X (5,)")],
)
def test_wrong_shapes_name_the_shapes(shapes, fragment):
    x, w, b = (np.zeros(s) for s in shapes)
    with pytest.raises(ShapeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        dense_forward(x, w, b)


def test_relu_and_sigmoid():
    z = np.array([-1000.0, -1.0, 0.0, 2.0, 1000.0])
    np.testing.assert_array_equal(relu(z), [0, 0, 0, 2, 1000])
    s = sigmoid(z)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.5


def test_backprop_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    net = TwoLayerNet.init(3, 6, rng)
    assert gradient_check(net, x, y) < 1e-6


def test_backprop_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 2)), rng.integers(0, 2, 10).astype(float)
    net = TwoLayerNet.init(2, 4, rng)
    net.forward(x)
    grads = net.backward(y)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in net.params().items()}
    h = torch.relu(torch.tensor(x) @ params["w1"] + params["b1"])
    p = torch.sigmoid(h @ params["w2"] + params["b2"])[:, 0]
    torch.nn.functional.binary_cross_entropy(p, torch.tensor(y)).backward()
    for name, tensor in params.items():
        np.testing.assert_allclose(grads[name], tensor.grad.numpy(), atol=1e-10)


def test_training_reduces_loss_and_learns_xor():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    net = TwoLayerNet.init(2, 16, rng)
    before = binary_cross_entropy(net.forward(x), y.reshape(-1, 1))
    history = train(net, x, y, epochs=200, lr=0.5, batch_size=32, rng=rng)
    assert history[-1] < before / 3
    assert (net.predict(x) == y).mean() > 0.9
