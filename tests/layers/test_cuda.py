"""lorakit on a CUDA GPU: every layer's forward, gradients and merge match the CPU; bf16
(parameters or autocast) stays close to float32; DoRA's step never allocates an out×in matrix;
PEFT agrees on the GPU too; torch.compile (inductor, Triton) matches eager; the TinyLM fine-tunes.

Skipped as a whole where no CUDA device is present (CI). Run on a GPU machine with
``python -m pytest tests/layers/test_cuda.py``.
"""
import pytest
import torch
from conftest import CASES, LAYER_NAMES, trained  # noqa: E402
from torch import nn

from lorakit import (
    DoRALinear,
    LoRALinear,
)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

IN, OUT, R = 48, 40, 6
NAMES = LAYER_NAMES
CUDA = torch.device("cuda")


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return trained(CASES[name].build(nn.Linear(IN, OUT), R, 12.0), std=0.2)   # every path contributes


def inputs(name: str, batch: int = 3, seq: int = 11) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, seq, IN, generator=g)
    return (x, *CASES[name].extra(x, g))


def step(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list]:
    """(output, [dL/dx] + [dL/dθ for every trainable θ]) for L = Σ y ⊙ g with a fixed g."""
    x = args[0].detach().requires_grad_(True)
    y = layer(x, *args[1:])
    g = torch.linspace(-1, 1, y.numel(), device=y.device, dtype=y.dtype).reshape(y.shape)
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    return y, list(torch.autograd.grad(y, params, g))


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_gradients_match_the_cpu(name):
    layer = make(name)
    args = inputs(name)
    y_cpu, g_cpu = step(layer, args)
    y_gpu, g_gpu = step(layer.to(CUDA), tuple(a.to(CUDA) for a in args))
    assert y_gpu.is_cuda and all(g.is_cuda for g in g_gpu)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_gpu, g_cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-6)).item()


@pytest.mark.parametrize("name", NAMES)
def test_bf16_parameters_and_autocast_stay_close_to_float32(name):
    layer = make(name).to(CUDA)
    args = tuple(a.to(CUDA) for a in inputs(name))
    y32, g32 = step(layer, args)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_ac, g_ac = step(layer, args)
    assert y_ac.dtype == torch.bfloat16
    lowp = make(name).to(CUDA, torch.bfloat16)
    y16, g16 = step(lowp, tuple(a.bfloat16() for a in args))
    assert y16.dtype == torch.bfloat16
    for got in (y_ac, y16):
        assert _rel_err(got, y32) < 2e-2
    for grads in (g_ac, g16):      # bf16 keeps 8 bits of mantissa: about 0.4% per rounding
        for a, b in zip(grads, g32, strict=True):
            assert _rel_err(a, b) < 5e-2


@pytest.mark.parametrize("name", NAMES)
def test_merge_and_unmerge_on_the_gpu(name):
    layer = make(name).to(CUDA).eval()
    args = tuple(a.to(CUDA) for a in inputs(name))
    W0 = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        y = layer(*args)
        p = args[1] if name in ("bilinear", "rss") else None
        if p is not None:            # a per-condition merge: one condition for the whole batch
            p = p[:1]
            args = (args[0][:1], p)
            y = layer(*args)
        if name == "hylorada_v2":    # v2 merges its prior-free form
            args, y = args[:1], layer(args[0])
        layer.merge(*(() if p is None else (p,)))
        assert layer.base_layer.weight.is_cuda
        torch.testing.assert_close(layer.base_layer(args[0]), y, rtol=1e-4, atol=1e-4)
        layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, W0, rtol=0, atol=1e-5)


def test_dora_step_never_allocates_an_out_by_in_matrix():
    """PEFT's DoRA builds W + s·BA (out × in) every step; lorakit's allocates activations only.

    The shapes make W (2048², 16 MiB in float32) 64 times as large as x (64 tokens), so any
    out×in temporary stands out; the same measurement on PEFT's layer shows it does see one.
    """
    n_in = n_out = 2048
    w_bytes = n_in * n_out * 4

    def extra_peak(layer: nn.Module) -> int:
        x = torch.randn(64, n_in, device=CUDA, requires_grad=True)
        g = torch.randn(64, n_out, device=CUDA)
        layer(x).backward(g)                           # warm-up: gradients' buffers exist
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        layer(x).backward(g)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    torch.manual_seed(0)
    ours = DoRALinear(nn.Linear(n_in, n_out), 16, 32.0).to(CUDA)
    assert extra_peak(ours) < 0.25 * w_bytes
    peft = pytest.importorskip("peft")
    from peft.tuners.lora import Linear as PeftLinear
    cfg = peft.LoraConfig(r=16, lora_alpha=32, use_dora=True)
    theirs = PeftLinear(nn.Linear(n_in, n_out), "default", cfg, r=16, lora_alpha=32,
                        use_dora=True).to(CUDA)
    theirs.base_layer.requires_grad_(False)
    assert extra_peak(theirs) >= w_bytes               # the measurement sees such a matrix


@pytest.mark.parametrize("dora", [False, True])
def test_matches_peft_on_the_gpu(dora):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLinear

    torch.manual_seed(0)
    base = nn.Linear(IN, OUT)
    cfg = LoraConfig(r=R, lora_alpha=12, use_dora=dora)
    theirs = PeftLinear(nn.Linear(IN, OUT), "default", cfg, r=R, lora_alpha=12, use_dora=dora)
    theirs.base_layer.load_state_dict(base.state_dict())
    ours = (DoRALinear if dora else LoRALinear)(base, R, 12.0)
    with torch.no_grad():
        theirs.lora_B["default"].weight.normal_(0, 0.2)
        ours.lora_A.copy_(theirs.lora_A["default"].weight)
        ours.lora_B.copy_(theirs.lora_B["default"].weight)
        if dora:
            ours.magnitude.copy_(theirs.lora_magnitude_vector["default"].weight)
    ours, theirs = ours.to(CUDA), theirs.to(CUDA)
    theirs.base_layer.requires_grad_(False)
    x = torch.randn(4, 9, IN, device=CUDA)
    y_ours, g_ours = step(ours, (x,))
    y_theirs, g_theirs = step(theirs, (x,))
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-4, atol=1e-5)
    # x, then A, B (and m): PEFT orders its parameters A, B, magnitude as lorakit does
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["lora", "dora", "hylorada_v2"])
def test_inductor_on_the_gpu_matches_eager(name):
    layer = make(name).to(CUDA)
    args = tuple(a.to(CUDA) for a in inputs(name))
    compiled = torch.compile(layer, fullgraph=True)
    y_eager, g_eager = step(layer, args)
    y_comp, g_comp = step(compiled, args)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_comp, g_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", [LoRALinear, DoRALinear])
def test_tinylm_fine_tunes_on_the_gpu(cls):
    """The shipped model with adapters injected trains in bf16 autocast: the loss goes down."""
    from lorakit.lm.tinylm import lm_loss, load_pretrained
    from lorakit.tuning import inject_adapters, mark_only_adapters_trainable

    torch.manual_seed(0)
    model = load_pretrained(device=CUDA)
    inject_adapters(model, cls, target_modules=["q_proj", "v_proj"], rank=4, alpha=8.0)
    mark_only_adapters_trainable(model)
    model.to(CUDA)
    ids = torch.randint(0, model.config.vocab_size, (8, 65), device=CUDA)
    x, y = ids[:, :-1], ids[:, 1:]           # one fixed batch: the adapters can memorise it
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses
