"""The layers on a CUDA device (the reference path) against torch.nn on the same device (cuDNN).

Skipped, with the reason in the summary, where no GPU is present (CI has none); run on a lent GPU
machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import MODES, flat_state, pair
from tinydata import corpus
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab import kernels
from rnnlab.models import ModelConfig
from rnnlab.tasks import LanguageModelTask
from rnnlab.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

CUDA = torch.device("cuda")
I, H, T, B = 6, 8, 9, 4
LENGTHS = torch.tensor([9, 3, 7, 5])


@pytest.fixture(autouse=True)
def _exact_float32():
    """cuDNN and cuBLAS may use TF32 for float32; the comparison needs true float32 products."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters()}


def _weighted_sum(out: torch.Tensor, h) -> torch.Tensor:
    """A loss whose gradient differs per element (a plain sum would hide index errors)."""
    total = out.new_zeros(())
    for t in [out, *flat_state(h)]:
        w = torch.cos(torch.arange(t.numel(), device=t.device, dtype=t.dtype)).view_as(t)
        total = total + (t * w).sum()
    return total


def test_cuda_runs_the_reference_path():
    assert kernels.backend(CUDA, torch.float32) == "reference"
    assert kernels.backend("cuda", torch.float64) == "reference"


# float32: cuDNN sums the weight gradients over steps in its own order (seen: 1.03e-5 apart on
# one element of dW_ih at this size), so 5e-5 here; float64 checks the math to 1e-10.
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 5e-5), (torch.float64, 1e-10)], ids=["f32", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_on_cuda_matches_cudnn(mode, packed, dtype, atol):
    ref, ours = pair(mode, I, H, dtype, num_layers=2, bidirectional=True)
    ref, ours = ref.to(CUDA), ours.to(CUDA)
    x = torch.randn(T, B, I, dtype=dtype, device=CUDA)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    results = []
    for layer, xi in zip((ref, ours), xs):
        inp = pack_padded_sequence(xi, LENGTHS, enforce_sorted=False) if packed else xi
        out, h = layer(inp)
        out = out.data if packed else out
        _weighted_sum(out, h).backward()
        results.append((out, flat_state(h)))
    (out_r, h_r), (out_o, h_o) = results
    assert out_o.device.type == "cuda"
    torch.testing.assert_close(out_o, out_r, atol=atol, rtol=atol)
    for a, b in zip(h_o, h_r):
        torch.testing.assert_close(a, b, atol=atol, rtol=atol)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=atol, rtol=atol)
    ref_grads = _grads(ref)
    for name, g in _grads(ours).items():
        torch.testing.assert_close(g, ref_grads[name], atol=atol, rtol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_gradcheck_float64_on_cuda(mode):
    _, layer = pair(mode, 3, 4, torch.float64)
    layer = layer.to(CUDA)
    x = torch.randn(5, 2, 3, dtype=torch.float64, device=CUDA, requires_grad=True)
    params = [p for p in layer.parameters()]

    def fn(inp, *ps):
        out, _ = torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], ps)),
                                            (inp,))
        return out

    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_step_on_cuda_equals_forward(mode):
    _, layer = pair(mode, I, H, torch.float32, num_layers=2)
    layer = layer.to(CUDA).eval()
    x = torch.randn(T, B, I, device=CUDA)
    with torch.no_grad():
        full, h_full = layer(x)
        h = None
        for t in range(T):
            out, h = layer.step(x[t], h)
            torch.testing.assert_close(out, full[t], atol=1e-5, rtol=1e-5)
    for a, b in zip(flat_state(h), flat_state(h_full)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cuda_state_dict_loads_on_the_cpu():
    ref = torch.nn.GRU(I, H, num_layers=2).to(CUDA)
    ours = rnnlab.GRU(I, H, num_layers=2)
    ours.load_state_dict(ref.state_dict())  # cuda tensors copied into the cpu parameters
    x = torch.randn(T, B, I)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x.to(CUDA))[0].cpu(), atol=1e-5, rtol=1e-5)


def test_char_lm_trains_on_cuda(tmp_path):
    task = LanguageModelTask(corpus(300), level="char", source="tiny", batch_size=8, bptt=25,
                             val_fraction=0.1)
    cfg = TrainConfig(out=str(tmp_path / "run"), progress=False, device="cuda", epochs=12, lr=1e-2,
                      eval_every=0)
    trainer = Trainer(task, ModelConfig(kind="", cell="gru", hidden=48, embed=16), cfg)
    assert next(trainer.model.parameters()).device.type == "cuda"
    result = trainer.fit()
    assert result["val"]["loss"] < 0.9, result["val"]  # same bar as the CPU test in test_train.py
