"""lorakit.BilinearLoRALinear and RSSBilinearLoRA: equation, init, per-condition merge, bad p,
gradients, and handing p to a model with ``lorakit.condition``."""
import asyncio
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lorakit
from lorakit import BilinearLoRALinear, LoRALinear, MergeStateError, RSSBilinearLoRA, condition
from lorakit.conditioning import current_condition

CLASSES = [BilinearLoRALinear, RSSBilinearLoRA]
GATES = ["linear", "one_plus"]
IN, OUT, DP, R = 6, 5, 3, 2


def make(cls=BilinearLoRALinear, in_f=IN, out_f=OUT, d_p=DP, rank=R, alpha=4.0, bias=True,
         gate="linear", seed=0, random_b=True, dtype=torch.float32):
    torch.manual_seed(seed)
    layer = cls(nn.Linear(in_f, out_f, bias=bias).to(dtype), d_p, rank=rank, alpha=alpha,
                gate=gate)
    if random_b:
        with torch.no_grad():
            layer.lora_B.normal_()
    return layer


def reference(layer, x, p):
    """A different route: per sample, the merged weight W + s B diag(g(p_b)) A and bias."""
    base, s = layer.base_layer, layer.alpha / layer.rank
    A, B, C = layer.lora_A, layer.lora_B, layer.lora_C
    b = base.bias if base.bias is not None else torch.zeros(layer.out_features, dtype=x.dtype)

    def weight(v):
        g = C @ v if layer.gate_form == "linear" else 1 + C @ v
        return base.weight + s * B @ torch.diag(g) @ A

    def bias(v):
        return b + s * B @ (layer.lora_S @ v) if isinstance(layer, RSSBilinearLoRA) else b

    if p.dim() == 1:
        return x @ weight(p).T + bias(p)
    return torch.stack([x[i] @ weight(p[i]).T + bias(p[i]) for i in range(len(p))])


def shared_weights(src, dst):
    """Copy the parameters dst has (A, B, C, base) from src."""
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if k in dst.state_dict()})


# --- the equation --------------------------------------------------------------------------
SHAPES = [((4, IN), (4, DP)), ((4, 5, IN), (4, DP)), ((4, 3, 2, IN), (4, DP)),
          ((4, 5, IN), (DP,)), ((IN,), (DP,)), ((1, 7, IN), (1, DP))]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("x_shape, p_shape", SHAPES)
def test_forward_matches_reference(cls, gate, x_shape, p_shape):
    layer = make(cls, gate=gate)
    x, p = torch.randn(x_shape), torch.randn(p_shape)
    y = layer(x, p)
    assert y.shape == (*x_shape[:-1], OUT)
    torch.testing.assert_close(y, reference(layer, x, p))


@settings(max_examples=30, deadline=None)
@given(in_f=st.integers(1, 10), out_f=st.integers(1, 10), d_p=st.integers(1, 5),
       batch=st.integers(1, 4), middle=st.lists(st.integers(1, 3), max_size=2),
       per_sample=st.booleans(), bias=st.booleans(), rss=st.booleans(),
       gate=st.sampled_from(GATES), data=st.data())
def test_forward_matches_reference_for_any_shape(in_f, out_f, d_p, batch, middle, per_sample,
                                                 bias, rss, gate, data):
    rank = data.draw(st.integers(1, min(in_f, out_f)))
    layer = make(RSSBilinearLoRA if rss else BilinearLoRALinear, in_f, out_f, d_p, rank,
                 alpha=2.0, bias=bias, gate=gate)
    x = torch.randn(batch, *middle, in_f)
    p = torch.randn(batch, d_p) if per_sample else torch.randn(d_p)
    y = layer(x, p)
    assert y.shape == (batch, *middle, out_f)
    torch.testing.assert_close(y, reference(layer, x, p))
    if not per_sample:  # one condition: the merged layer is the same function
        torch.testing.assert_close(layer.to_linear(p)(x), y)


def test_parameters_shapes_and_counts():
    rss = make(RSSBilinearLoRA, random_b=False)
    shapes = {n: tuple(t.shape) for n, t in rss.named_parameters() if t.requires_grad}
    assert shapes == {"lora_A": (R, IN), "lora_B": (OUT, R), "lora_C": (R, DP),
                      "lora_S": (R, DP)}
    bil = make(random_b=False)
    assert sum(t.numel() for t in bil.parameters() if t.requires_grad) == R * (IN + OUT + DP)
    assert not any(t.requires_grad for t in bil.base_layer.parameters())
    assert "merged_condition" not in bil.state_dict()


# --- init ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("gate", GATES)
def test_identity_at_init_but_b_gets_a_gradient(cls, gate):
    layer = make(cls, gate=gate, random_b=False)
    x, p = torch.randn(4, 5, IN), torch.randn(4, DP)
    y = layer(x, p)
    torch.testing.assert_close(y, layer.base_layer(x), rtol=0, atol=0)
    y.pow(2).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0          # the path is open from the first step
    assert layer.lora_A.grad.abs().sum() == 0         # (A, C, S move once B has)
    assert layer.lora_C.abs().min() > 0 and layer.lora_A.abs().sum() > 0


def test_init_scale_of_the_gate_does_not_depend_on_cond_dim():
    for d_p in (2, 64):
        layer = make(d_p=d_p, rank=4, random_b=False, seed=d_p)
        bound = 1 / d_p ** 0.5
        assert layer.lora_C.abs().max() <= bound
        g = layer.gate(torch.randn(4000, d_p))        # standardised p
        assert 0.4 < g.std().item() < 0.75            # ~ 1/sqrt(3), like the rows of A


def test_linear_gate_shuts_the_path_at_p_zero():
    layer = make()
    x = torch.randn(3, IN)
    torch.testing.assert_close(layer(x, torch.zeros(3, DP)), layer.base_layer(x), rtol=0, atol=0)


def test_one_plus_gate_with_zero_c_is_plain_lora():
    layer = make(gate="one_plus")
    with torch.no_grad():
        layer.lora_C.zero_()
    lora = LoRALinear(layer.base_layer, rank=R, alpha=4.0)
    shared_weights(layer, lora)
    x = torch.randn(3, 4, IN)
    torch.testing.assert_close(layer(x, torch.randn(3, DP)), lora(x))


# --- merging for one condition -------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("bias", [True, False])
def test_merge_equals_forward_and_round_trips(cls, gate, bias):
    layer = make(cls, gate=gate, bias=bias)
    x, p0 = torch.randn(4, 5, IN), torch.randn(DP)
    y0 = layer(x, p0)
    w0 = layer.base_layer.weight.clone()
    b0 = None if layer.base_layer.bias is None else layer.base_layer.bias.clone()
    layer.merge(p0)
    torch.testing.assert_close(layer(x), y0)
    creates_bias = cls is RSSBilinearLoRA and not bias
    assert (layer.base_layer.bias is not None) == (bias or creates_bias)
    if creates_bias:
        assert not layer.base_layer.bias.requires_grad
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    if b0 is None:
        assert layer.base_layer.bias is None
        assert "bias" not in dict(layer.base_layer.named_parameters())
    else:
        torch.testing.assert_close(layer.base_layer.bias, b0, rtol=0, atol=1e-6)
    assert layer.merged_condition is None
    torch.testing.assert_close(layer(x, p0), y0)


@pytest.mark.parametrize("cls", CLASSES)
def test_merged_layer_stays_exact_for_other_conditions(cls):
    layer = make(cls)
    x, p0, p1, batch = torch.randn(4, 5, IN), torch.randn(DP), torch.randn(DP), torch.randn(4, DP)
    expected = {"p0": layer(x, p0), "p1": layer(x, p1), "batch": layer(x, batch)}
    layer.merge(p0.unsqueeze(0))                       # (1, cond_dim) is one condition too
    torch.testing.assert_close(layer(x), expected["p0"])
    assert torch.equal(layer(x, p0), layer(x))         # the correction is exactly zero at p0
    torch.testing.assert_close(layer(x, p1), expected["p1"])
    torch.testing.assert_close(layer(x, batch), expected["batch"])
    with condition(p1):
        torch.testing.assert_close(layer(x), expected["p1"])


@pytest.mark.parametrize("cls", CLASSES)
def test_delta_weight_and_bias(cls):
    layer = make(cls)
    p = torch.randn(DP)
    s, B, A = layer.scaling, layer.lora_B, layer.lora_A
    torch.testing.assert_close(layer.delta_weight(p), s * B @ torch.diag(layer.lora_C @ p) @ A)
    torch.testing.assert_close(layer.delta_weight(p[None]), layer.delta_weight(p))
    if cls is RSSBilinearLoRA:
        torch.testing.assert_close(layer.delta_bias(p), s * B @ layer.lora_S @ p)
    else:
        assert layer.delta_bias(p) is None


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bias", [True, False])
def test_to_linear(cls, bias):
    layer = make(cls, bias=bias)
    x, p0 = torch.randn(2, 5, IN), torch.randn(DP)
    w0 = layer.base_layer.weight.clone()
    lin = layer.to_linear(p0)
    assert type(lin) is nn.Linear and lin.weight.grad_fn is None
    assert (lin.bias is not None) == (bias or cls is RSSBilinearLoRA)
    torch.testing.assert_close(lin(x), layer(x, p0))
    assert torch.equal(layer.base_layer.weight, w0)
    assert (layer.base_layer.bias is None) == (not bias)
    layer.merge(p0)
    torch.testing.assert_close(layer.to_linear()(x), lin(x))
    torch.testing.assert_close(layer.to_linear(p0)(x), lin(x))
    with pytest.raises(MergeStateError, match="merged for another condition"):
        layer.to_linear(p0 + 1)


@pytest.mark.parametrize("cls", CLASSES)
def test_merge_state_errors(cls):
    layer = make(cls, bias=False)
    p = torch.randn(DP)
    with pytest.raises(MergeStateError, match="not merged"):
        layer.unmerge()
    with pytest.raises(ValueError, match=r"merge\(\) needs one condition vector p of shape \(3,\)"):
        layer.merge()
    with pytest.raises(ValueError, match="a batch of 4 conditions"):
        layer.merge(torch.randn(4, DP))
    with pytest.raises(ValueError, match=r"to_linear\(\) needs one condition"):
        layer.to_linear()
    layer.merge(p)
    with pytest.raises(MergeStateError, match="already merged"):
        layer.merge(p)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("where", ["p", "C"])
def test_merge_refuses_non_finite_and_touches_nothing(cls, where):
    layer = make(cls, bias=False)
    p = torch.randn(DP)
    if where == "p":
        p[0] = float("nan")
    else:
        with torch.no_grad():
            layer.lora_C[0, 0] = float("inf")
    w0 = layer.base_layer.weight.clone()
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        layer.merge(p)
    assert torch.equal(layer.base_layer.weight, w0) and not layer.merged
    assert layer.base_layer.bias is None and layer.merged_condition is None
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        layer.to_linear(p)


# --- bad p ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("p, exc, match", [
    (torch.randn(4, 5), ValueError, r"\(4, 3\) or \(3,\).*got \(4, 5\)"),       # wrong cond_dim
    (torch.randn(5), ValueError, r"\(4, 3\) or \(3,\).*got \(5,\)"),
    (torch.randn(5, 3), ValueError, r"\(4, 3\) or \(3,\).*one condition per sample"),  # batch
    (torch.randn(1, 3), ValueError, r"\(4, 3\) or \(3,\)"),      # no silent broadcast of B = 1
    (torch.randn(4, 1, 3), ValueError, r"\(4, 3\) or \(3,\).*got \(4, 1, 3\)"),  # dim > 2
    (torch.randn(()), ValueError, r"\(4, 3\) or \(3,\)"),
    (torch.randn(4, 3).double(), TypeError, "dtype torch.float32, got torch.float64"),
    (torch.randn(4, 3).double(), TypeError, "x's dtype torch.float32, got torch.float64"),
    (torch.randn(4, 3, device="meta"), ValueError, "x's device cpu, got meta"),
    ([0.0, 1.0, 2.0], TypeError, r"torch.Tensor of shape \(4, 3\) or \(3,\)"),
])
def test_bad_p_is_named(cls, p, exc, match):
    layer = make(cls)
    with pytest.raises(exc, match=match):
        layer(torch.randn(4, 7, IN), p)


def test_per_sample_p_needs_a_batch_dim_in_x():
    with pytest.raises(ValueError, match=r"p must have shape \(3,\)"):
        make()(torch.randn(IN), torch.randn(1, DP))


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_p_says_how_to_pass_it(cls):
    with pytest.raises(ValueError, match=r"layer\(x, p\).*with lorakit.condition\(p\)"):
        make(cls)(torch.randn(2, IN))


@pytest.mark.parametrize("p, exc, match", [
    (torch.randn(4), ValueError, r"shape \(3,\) \(or \(1, 3\)\), got \(4,\)"),
    (torch.randn(1, 1, 3), ValueError, r"shape \(3,\)"),
    (torch.ones(3, dtype=torch.int32), TypeError, "layer's dtype torch.float32"),
    (torch.randn(3, dtype=torch.float64), TypeError, "layer's dtype torch.float32"),
    (torch.randn(3, device="meta"), ValueError, "layer's device cpu"),
])
def test_bad_p_for_merge(p, exc, match):
    layer = make(RSSBilinearLoRA)
    with pytest.raises(exc, match=match):
        layer.merge(p)
    assert not layer.merged


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(cond_dim=0), ValueError, r"cond_dim must be a positive int \(the length of the condition p\)"),
    (dict(cond_dim=2.0), TypeError, "cond_dim must be an int"),
    (dict(cond_dim=True), TypeError, "cond_dim must be an int"),
    (dict(cond_dim=3, gate="sigmoid"), ValueError, "gate must be one of"),
    (dict(cond_dim=3, rank=0), ValueError, "between 1 and"),
    (dict(cond_dim=3, dropout=1.0), ValueError, "dropout"),
])
def test_bad_arguments(kwargs, exc, match):
    for cls in CLASSES:
        with pytest.raises(exc, match=match):
            cls(nn.Linear(IN, OUT), **kwargs)


# --- gradients -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("gate", GATES)
def test_gradcheck_float64(cls, gate):
    layer = make(cls, in_f=4, out_f=3, d_p=2, gate=gate, dtype=torch.float64)
    names = ["lora_A", "lora_B"] + list(layer.condition_matrices)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)

    def f(x, p, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x, p))

    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(f, (x, p, *params))


def test_gradient_of_a_is_gated_by_p():
    layer = make()
    x, p = torch.randn(4, 5, IN), torch.randn(4, DP)
    w = torch.randn(OUT)                               # a loss linear in y

    def grad_a(p):
        layer.zero_grad()
        (layer(x, p) @ w).sum().backward()
        return layer.lora_A.grad.clone()

    g1 = grad_a(p)
    assert g1.abs().sum() > 0
    torch.testing.assert_close(grad_a(2 * p), 2 * g1)
    assert grad_a(torch.zeros_like(p)).abs().sum() == 0  # p = 0: A learns nothing


def test_rss_shift_is_a_conditional_bias_independent_of_x():
    rss = make(RSSBilinearLoRA)
    bil = make(BilinearLoRALinear)
    shared_weights(rss, bil)
    p, q = torch.randn(DP), torch.randn(DP)

    def shift_part(x, p):
        return rss(x, p) - bil(x, p)                    # s B S p, broadcast over x

    x1, x2 = torch.randn(3, 4, IN), torch.randn(3, 4, IN)
    torch.testing.assert_close(shift_part(x1, p), shift_part(x2, p))
    torch.testing.assert_close(shift_part(x1, p)[0, 0], rss.delta_bias(p))
    torch.testing.assert_close(shift_part(x1, 2 * p + q), 2 * shift_part(x1, p) + shift_part(x1, q))
    torch.testing.assert_close(rss.shift(p), rss.lora_S @ p)


@pytest.mark.parametrize("cls", CLASSES)
def test_update_stays_in_the_column_space_of_b(cls):
    layer = make(cls, in_f=10, out_f=12, rank=3)
    x, p = torch.randn(8, 10), torch.randn(8, DP)
    delta = (layer(x, p) - layer.base_layer(x)).T                     # (out, N)
    B = layer.lora_B.detach()
    residual = delta - B @ torch.linalg.lstsq(B, delta).solution
    assert residual.abs().max() < 1e-4 * delta.abs().max()
    assert torch.linalg.matrix_rank(delta) <= 3


def test_gradients_reach_adapters_not_base():
    layer = make(RSSBilinearLoRA)
    layer(torch.randn(4, IN), torch.randn(4, DP)).sum().backward()
    for name in ("lora_A", "lora_B", "lora_C", "lora_S"):
        assert getattr(layer, name).grad.abs().sum() > 0, name
    assert layer.base_layer.weight.grad is None


def test_dropout_only_on_x_and_only_in_training():
    torch.manual_seed(0)
    layer = BilinearLoRALinear(nn.Linear(IN, OUT), DP, rank=R, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x, p = torch.randn(8, IN), torch.randn(8, DP)
    layer.eval()
    torch.testing.assert_close(layer(x, p), reference(layer, x, p))
    layer.train()
    assert not torch.allclose(layer(x, p), reference(layer, x, p))


# --- lorakit.condition ---------------------------------------------------------------------
def test_context_gives_p_to_every_conditioned_layer_of_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(BilinearLoRALinear(nn.Linear(IN, 8), DP, rank=2), nn.ReLU(),
                          RSSBilinearLoRA(nn.Linear(8, OUT), DP, rank=2))
    for m in model:
        if hasattr(m, "lora_B"):
            nn.init.normal_(m.lora_B)
    x, p = torch.randn(4, IN), torch.randn(4, DP)
    expected = model[2](model[1](model[0](x, p)), p)
    with condition(p):
        assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match="needs the condition p"):
        model(x)


def test_explicit_p_wins_over_context():
    layer, x = make(), torch.randn(2, IN)
    p, q = torch.randn(DP), torch.randn(DP)
    with condition(q):
        torch.testing.assert_close(layer(x, p), reference(layer, x, p))
        assert not torch.allclose(layer(x, p), layer(x))


def test_context_nests_and_restores_also_on_exceptions():
    layer, x = make(), torch.randn(2, IN)
    p, q = torch.randn(DP), torch.randn(DP)
    assert current_condition() is None
    with condition(p) as got:
        assert got is p
        with condition(q):
            assert current_condition() is q
            torch.testing.assert_close(layer(x), layer(x, q))
        assert current_condition() is p
        with pytest.raises(RuntimeError, match="boom"):
            with condition(q):
                raise RuntimeError("boom")
        assert current_condition() is p
        with condition(None):                          # hides the outer condition
            assert current_condition() is None
        torch.testing.assert_close(layer(x), layer(x, p))
    assert current_condition() is None
    with pytest.raises(TypeError, match="torch.Tensor"):
        with condition([1.0, 2.0, 3.0]):
            pass
    assert lorakit.condition is condition


def test_context_is_per_thread():
    layer, x = make(), torch.randn(4, IN)
    ps = [torch.randn(DP), torch.randn(DP)]
    barrier = threading.Barrier(2, timeout=10)
    results, errors = {}, []

    def work(i):
        try:
            with condition(ps[i]):
                barrier.wait()     # both blocks are open at once ...
                results[i] = layer(x)
                barrier.wait()     # ... and neither closes before the other has run
        except Exception as e:     # surfaced below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors, errors
    for i in range(2):
        assert torch.equal(results[i], layer(x, ps[i]))
    assert not torch.allclose(results[0], results[1])
    assert current_condition() is None


def test_context_is_per_async_task():
    layer, x = make(), torch.randn(4, IN)
    ps = [torch.randn(DP), torch.randn(DP)]

    async def work(i):
        with condition(ps[i]):
            await asyncio.sleep(0)     # let the other task enter its block
            return layer(x)

    async def main():
        return await asyncio.gather(work(0), work(1))

    for y, p in zip(asyncio.run(main()), ps, strict=True):
        assert torch.equal(y, layer(x, p))


# --- dtype and device ----------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_follows_base_dtype(cls, dtype):
    layer = make(cls, dtype=dtype)
    assert all(t.dtype == dtype for t in layer.parameters())
    x, p = torch.randn(4, 5, IN, dtype=dtype), torch.randn(4, DP, dtype=dtype)
    y = layer(x, p)
    assert y.dtype == dtype
    tol = dict(rtol=2e-2, atol=5e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y.double(), reference(layer.double(), x.double(), p.double()), **tol)


def test_merge_round_trip_bf16_within_tolerance():
    layer = make(RSSBilinearLoRA, in_f=64, out_f=32, rank=4, dtype=torch.bfloat16, random_b=False)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.01)
    w0, b0 = layer.base_layer.weight.clone(), layer.base_layer.bias.clone()
    layer.merge(torch.randn(DP, dtype=torch.bfloat16))
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=2 * 2 ** -8, atol=1e-3)
    torch.testing.assert_close(layer.base_layer.bias, b0, rtol=2 * 2 ** -8, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", CLASSES)
def test_cuda_matches_cpu(cls):
    layer = make(cls, bias=False)
    x, p, p0 = torch.randn(4, 5, IN), torch.randn(4, DP), torch.randn(DP)
    y = layer(x, p)
    layer.cuda()
    assert layer.lora_C.is_cuda
    torch.testing.assert_close(layer(x.cuda(), p.cuda()).cpu(), y, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="device"):
        layer(x.cuda(), p)
    layer.merge(p0.cuda())
    assert layer.base_layer.bias is None or layer.base_layer.bias.is_cuda
    layer.cpu()                                       # the merged condition moves along
    torch.testing.assert_close(layer(x, p), y, rtol=1e-4, atol=1e-5)
