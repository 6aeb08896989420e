"""lorakit.tuning: injection by target modules, trainable parameters, merge/unload, save/load."""
import dataclasses
import json
import re

import pytest
import torch
from conftest import LAYER_CASES, TEST_SIZES
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit import AdapterLinear, LoRALinear, MergeStateError
from lorakit.conditioning import condition
from lorakit.layers.bilinear import BilinearLoRALinear, RSSBilinearLoRA
from lorakit.tuning import (
    adapter_init_kwargs,
    adapter_modules,
    adapter_state_dict,
    find_target_modules,
    inject_adapters,
    load_adapter,
    mark_only_adapters_trainable,
    merge_adapters,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    trainable_report,
    unload,
    unmerge_adapters,
)


class Block(nn.Module):
    def __init__(self, d=16, h=8):
        super().__init__()
        self.q_proj = nn.Linear(d, h)
        self.v_proj = nn.Linear(d, h, bias=False)
        self.o_proj = nn.Linear(h, d)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.o_proj(torch.tanh(self.q_proj(x)) * self.v_proj(x))
        return x + self.mlp(self.norm(x))


class Tiny(nn.Module):
    """embed -> 2 blocks -> lm_head; Linear layers of several shapes, with and without bias."""

    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d), Block(d)])
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.lm_head(x)


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny().eval()


def randomize(model, seed=1):
    """Non-zero B (and every adapter tensor) so the adapters change the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in adapter_state_dict(model).values():
            t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model


IDS = torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(0))
BLOCK_LINEARS = ["q_proj", "v_proj", "o_proj", "mlp.0", "mlp.2"]
ALL = [f"layers.{i}.{n}" for i in range(2) for n in BLOCK_LINEARS]


def snapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(n, type(m).__name__) for n, m in model.named_modules()],
            {n: p.requires_grad for n, p in model.named_parameters()})


def assert_unchanged(model, snap):
    state, modules, grads = snap
    now = model.state_dict()
    assert list(now) == list(state), "the model's keys changed"
    for k, v in state.items():
        assert torch.equal(now[k], v), f"{k} changed"
    assert [(n, type(m).__name__) for n, m in model.named_modules()] == modules
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads


# --- target matching ----------------------------------------------------------------------------
@pytest.mark.parametrize("targets, expected", [
    (["layers.0.q_proj"], ["layers.0.q_proj"]),                              # exact
    (["q_proj", "v_proj"], [f"layers.{i}.{n}" for i in range(2) for n in ("q_proj", "v_proj")]),
    (["mlp.2"], ["layers.0.mlp.2", "layers.1.mlp.2"]),                       # dotted suffix
    ([ "1.o_proj"], ["layers.1.o_proj"]),
    (r"layers\.\d+\.mlp\.[02]", [f"layers.{i}.mlp.{j}" for i in range(2) for j in (0, 2)]),
    (r".*\.(q|o)_proj", [f"layers.{i}.{n}" for i in range(2) for n in ("q_proj", "o_proj")]),
    ("all-linear", ALL),                                                     # lm_head left alone
    ("ALL-LINEAR", ALL),
])
def test_target_matching(targets, expected):
    model = tiny()
    assert find_target_modules(model, targets) == expected
    assert inject_adapters(model, LoRALinear, targets, rank=2) == expected
    assert sorted(adapter_modules(model)) == sorted(expected)
    assert type(model.lm_head) is nn.Linear


@pytest.mark.parametrize("exclude, expected", [
    (["layers.1.q_proj", "mlp.0"], [n for n in ALL if n != "layers.1.q_proj" and not n.endswith("mlp.0")]),
    (r"layers\.0\..*", [n for n in ALL if n.startswith("layers.1.")]),
])
def test_exclude_modules(exclude, expected):
    assert inject_adapters(tiny(), LoRALinear, "all-linear", exclude_modules=exclude, rank=2) == expected


def test_suffix_match_is_on_whole_name_parts_and_regex_is_a_full_match():
    model = tiny()
    with pytest.raises(ValueError, match="matched no nn.Linear.*layers.0.q_proj"):
        inject_adapters(model, LoRALinear, ["proj"])       # "proj" is not a dotted suffix
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        inject_adapters(model, LoRALinear, "q_proj")       # a string is a regex: full match
    assert not adapter_modules(model)


@pytest.mark.parametrize("targets", [["mlp"], ["norm"], ["embed"], r"layers\.0\.(q_proj|norm)"])
def test_targets_must_be_linear(targets):
    model = tiny()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="nn.Linear layers only"):
        inject_adapters(model, LoRALinear, targets)
    assert_unchanged(model, snap)


def test_no_double_injection_and_base_layers_never_matched():
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj"], rank=2)
    with pytest.raises(ValueError, match="already carry an adapter"):
        inject_adapters(model, LoRALinear, ["q_proj"])
    # all-linear skips the base layers inside the adapters
    added = inject_adapters(model, LoRALinear, "all-linear", rank=2)
    assert not any("base_layer" in n for n in added) and not any(n.endswith("q_proj") for n in added)


def test_all_linear_leaves_hf_style_output_head_alone():
    class WithGetter(Tiny):
        def get_output_embeddings(self):
            return self.layers[1].mlp[2]       # an unusual head: found by identity, not name

    torch.manual_seed(0)
    names = find_target_modules(WithGetter(), "all-linear")
    assert "layers.1.mlp.2" not in names and "lm_head" in names


def test_bad_arguments_leave_the_model_unchanged():
    model = tiny()
    snap = snapshot(model)
    # rank 9 fits every layer but v_proj/q_proj (out = 8): nothing may be half-injected
    with pytest.raises(ValueError, match=r"layers\.0\.q_proj.*rank must be between 1 and"):
        inject_adapters(model, LoRALinear, "all-linear", rank=9)
    assert_unchanged(model, snap)
    with pytest.raises(TypeError, match="AdapterLinear subclass"):
        inject_adapters(model, nn.Linear, ["q_proj"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        inject_adapters(model, LoRALinear, "(")
    with pytest.raises(ValueError, match="non-empty list"):
        inject_adapters(model, LoRALinear, [])
    assert_unchanged(model, snap)


def test_injection_keeps_function_at_init_and_follows_dtype():
    model = tiny().double()
    ids = IDS
    y0 = model(ids)
    inject_adapters(model, LoRALinear, "all-linear", rank=2, alpha=4)
    assert torch.equal(model(ids), y0)                    # B = 0: same function
    assert all(a.lora_A.dtype == torch.float64 for a in adapter_modules(model).values())


# --- trainable parameters -----------------------------------------------------------------------
def test_trainable_counts_are_r_in_plus_out():
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj", "v_proj", "mlp.0"], rank=3)
    mark_only_adapters_trainable(model)
    report = trainable_report(model)
    expected = sum(3 * (a.in_features + a.out_features) for a in adapter_modules(model).values())
    assert report["trainable"] == expected == sum(report["per_adapter"].values())
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert report["trainable_percent"] == pytest.approx(100 * expected / report["total"])
    assert report["per_adapter"]["layers.0.mlp.0"] == 3 * (16 + 32)


def test_print_trainable_parameters_uses_pefts_format(capsys):
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj"], rank=2)
    mark_only_adapters_trainable(model)
    print_trainable_parameters(model)
    out = capsys.readouterr().out.strip()
    r = trainable_report(model)
    assert out == (f"trainable params: {r['trainable']:,d} || all params: {r['total']:,d} || "
                   f"trainable%: {r['trainable_percent']:.4f}")
    assert re.fullmatch(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}", out)


@pytest.mark.parametrize("bias", ["none", "all", "adapter_only"])
def test_bias_modes(bias):
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj", "v_proj"], rank=2)   # v_proj has no bias
    mark_only_adapters_trainable(model, bias=bias)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert len(lora) == 8
    biases = trainable - lora
    if bias == "none":
        assert biases == set()
    elif bias == "adapter_only":
        assert biases == {"layers.0.q_proj.base_layer.bias", "layers.1.q_proj.base_layer.bias"}
    else:
        assert biases == {n for n, _ in model.named_parameters() if n.endswith(".bias")}
        assert "layers.0.norm.bias" in biases and "layers.1.mlp.2.bias" in biases
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith("weight"))
    # the adapter state follows the same rule
    assert set(adapter_state_dict(model, bias=bias)) == trainable


def test_mark_only_adapters_trainable_errors():
    with pytest.raises(ValueError, match="no lorakit adapters"):
        mark_only_adapters_trainable(tiny())
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj"])
    with pytest.raises(ValueError, match="bias must be one of"):
        mark_only_adapters_trainable(model, bias="lora_only")


# --- merging ------------------------------------------------------------------------------------
def adapted(seed=0, targets="all-linear", **kwargs):
    model = tiny(seed)
    inject_adapters(model, LoRALinear, targets, **{"rank": 2, "alpha": 4, **kwargs})
    return randomize(model, seed + 1)


def test_merge_and_unload_gives_plain_model_with_same_outputs():
    model = adapted()
    y = model(IDS)
    assert not torch.allclose(y, tiny()(IDS))             # the adapters do something
    out = merge_and_unload(model)
    assert out is model and not adapter_modules(model)
    assert not any(isinstance(m, AdapterLinear) for m in model.modules())
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(("proj", "mlp.0", "mlp.2")))
    assert list(model.state_dict()) == list(tiny().state_dict())
    torch.testing.assert_close(model(IDS), y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no lorakit adapters"):
        merge_and_unload(model)


def test_merge_and_unload_of_already_merged_layers():
    model = adapted()
    y = model(IDS)
    merge_adapters(model)
    merge_and_unload(model)                                # merged ones keep what they merged
    torch.testing.assert_close(model(IDS), y, rtol=1e-5, atol=1e-6)


def test_unload_restores_the_base_function():
    base = tiny()
    y0 = base(IDS)
    for merge_first in (False, True):
        model = adapted()
        if merge_first:
            merge_adapters(model)
        unload(model)
        assert not adapter_modules(model)
        torch.testing.assert_close(model(IDS), y0, rtol=1e-5, atol=1e-6)


def test_merge_unmerge_adapters():
    model = adapted()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    y = model(IDS)
    merge_adapters(model)
    assert all(a.merged for a in adapter_modules(model).values())
    torch.testing.assert_close(model(IDS), y, rtol=1e-5, atol=1e-6)
    merge_adapters(model)                                  # merged layers are skipped
    unmerge_adapters(model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, w0[k], rtol=0, atol=1e-6)
    with pytest.raises(MergeStateError, match="nothing to unmerge"):
        unmerge_adapters(model)


def test_merge_is_all_or_nothing():
    model = adapted()
    last = list(adapter_modules(model).values())[-1]
    with torch.no_grad():
        last.lora_B[0, 0] = float("nan")
    snap = snapshot(model)
    with pytest.raises(MergeStateError, match="NaN or Inf"):
        merge_and_unload(model)
    torch.testing.assert_close(model.state_dict(), snap[0], rtol=0, atol=1e-6, equal_nan=True)
    assert not any(a.merged for a in adapter_modules(model).values())
    assert [type(m).__name__ for _, m in model.named_modules()] == [t for _, t in snap[1]]


class GatedLoRA(LoRALinear):
    """A minimal conditioned layer for the protocol: update scaled by a scalar condition p."""

    def delta_weight(self, p=None):
        return super().delta_weight() * float(p if p is not None else self._p)

    ADAPTER = dataclasses.replace(LoRALinear.ADAPTER, name="gated_lora", condition="p")

    def merge(self, p=None):
        if p is None:
            raise ValueError("merge() needs p")
        self._p = p
        super().merge(p)


def test_conditioned_layers_need_p_to_merge():
    model = tiny()
    inject_adapters(model, GatedLoRA, ["q_proj"], rank=2)
    inject_adapters(model, LoRALinear, ["v_proj"], rank=2)
    randomize(model)
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"conditioned layers \['layers.0.q_proj', 'layers.1.q_proj'\].*p="):
        merge_and_unload(model)
    assert_unchanged(model, snap)
    q = model.layers[0].q_proj
    expected = q.base_layer.weight + 0.5 * q.scaling * q.lora_B @ q.lora_A
    merge_and_unload(model, p=0.5)
    torch.testing.assert_close(model.layers[0].q_proj.weight, expected)


@pytest.mark.parametrize("cls", [BilinearLoRALinear, RSSBilinearLoRA])
def test_bilinear_merge_and_unload_for_one_condition(cls):
    model = tiny()
    inject_adapters(model, cls, ["q_proj", "o_proj"], cond_dim=3, rank=2, alpha=4, gate="one_plus")
    randomize(model)
    p = torch.randn(3)
    with condition(p):
        y = model(IDS)
    with pytest.raises(ValueError, match="conditioned layers"):
        merge_and_unload(model)
    merge_and_unload(model, p=p)
    assert not adapter_modules(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("proj"))
    torch.testing.assert_close(model(IDS), y, rtol=1e-5, atol=1e-5)


def test_bilinear_init_kwargs_are_recorded():
    model = tiny()
    inject_adapters(model, RSSBilinearLoRA, ["v_proj"], cond_dim=3, rank=2, gate="one_plus")
    assert adapter_init_kwargs(model.layers[0].v_proj) == {
        "cond_dim": 3, "rank": 2, "alpha": 1.0, "dropout": 0.0, "gate": "one_plus"}
    # built directly (not by inject_adapters): read from the layer's attributes
    layer = RSSBilinearLoRA(nn.Linear(4, 5), cond_dim=2, rank=1, alpha=3, gate="one_plus")
    assert adapter_init_kwargs(layer) == {
        "cond_dim": 2, "rank": 1, "alpha": 3.0, "dropout": 0.0, "gate": "one_plus"}


def _every_adapter_class():
    """(class, extra kwargs, condition or None) for each registered family (tests/conftest.py);
    v2 runs without a prior (exactly v1's function, which is what merging keeps)."""
    out = []
    for case in LAYER_CASES:
        sizes = {k: TEST_SIZES[k] for k in case.spec.sizes}
        p = torch.randn(TEST_SIZES["cond_dim"]) if case.spec.condition == "p" else None
        out.append((case.cls, sizes, p))
    out.append((BilinearLoRALinear, {"cond_dim": 3, "gate": "one_plus"}, torch.randn(3, 3)))
    return out


@pytest.mark.parametrize("cls, kwargs, p", _every_adapter_class(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_save_load_round_trip_for_every_adapter_family(tmp_path, cls, kwargs, p):
    model = tiny()
    inject_adapters(model, cls, ["q_proj", "mlp.2"], rank=2, alpha=3, **kwargs)
    randomize(model)
    save_adapter(model, tmp_path)
    fresh = tiny()
    load_adapter(fresh, tmp_path)
    assert all(type(m) is cls for m in adapter_modules(fresh).values())
    for k, v in adapter_state_dict(model).items():
        assert torch.equal(adapter_state_dict(fresh)[k], v)
    if p is None:
        assert torch.equal(fresh(IDS), model(IDS))
    else:
        with condition(p):
            assert torch.equal(fresh(IDS), model(IDS))
    y = model(IDS) if p is None else None
    merge_and_unload(model, p=None if p is None else p[0] if p.dim() == 2 else p)
    assert not adapter_modules(model)
    if p is None:     # the merged plain model computes the same
        torch.testing.assert_close(model(IDS), y, rtol=1e-5, atol=1e-5)


# --- save / load --------------------------------------------------------------------------------
def test_save_load_round_trip_into_plain_and_adapted_models(tmp_path):
    model = adapted(targets=["q_proj", "mlp.2"], rank=3, alpha=5, dropout=0.1)
    model.eval()
    save_adapter(model, tmp_path, config={"base_model": "Tiny(seed=0)", "notes": "test"})
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["adapter_class"] == "lorakit.layers.lora.LoRALinear"
    assert cfg["adapter_kwargs"] == {"rank": 3, "alpha": 5.0, "dropout": 0.1}
    assert cfg["target_modules"] == ["layers.0.q_proj", "layers.0.mlp.2", "layers.1.q_proj", "layers.1.mlp.2"]
    assert cfg["base_model"] == "Tiny(seed=0)" and cfg["lorakit_version"]
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert set(saved) == set(adapter_state_dict(model)) and len(saved) == 8

    plain = tiny()
    assert load_adapter(plain, tmp_path) == cfg["target_modules"]
    plain.eval()
    assert torch.equal(plain(IDS), model(IDS))
    for k, v in adapter_state_dict(model).items():
        assert torch.equal(adapter_state_dict(plain)[k], v)
    assert adapter_modules(plain)["layers.0.q_proj"].dropout_p == 0.1

    other = tiny()                                              # same base, other adapter
    inject_adapters(other, LoRALinear, ["q_proj", "mlp.2"], rank=3, alpha=5, dropout=0.1)
    randomize(other, seed=5)
    load_adapter(other, tmp_path)                               # switch adapters in place
    other.eval()
    assert torch.equal(other(IDS), model(IDS))


def test_per_module_kwargs_round_trip(tmp_path):
    model = tiny()
    inject_adapters(model, LoRALinear, ["q_proj"], rank=2, alpha=2)
    inject_adapters(model, LoRALinear, ["mlp.0"], rank=4, alpha=8)
    randomize(model)
    save_adapter(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["adapter_kwargs"] == {"dropout": 0.0}
    assert cfg["module_kwargs"]["layers.1.mlp.0"] == {"rank": 4, "alpha": 8.0}
    fresh = tiny()
    load_adapter(fresh, tmp_path)
    assert torch.equal(fresh(IDS), model(IDS))


@pytest.mark.parametrize("bias", ["all", "adapter_only"])
def test_trained_biases_round_trip(tmp_path, bias):
    model = adapted(targets=["q_proj", "o_proj"])
    mark_only_adapters_trainable(model, bias=bias)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    save_adapter(model, tmp_path, bias=bias)
    fresh = tiny()
    load_adapter(fresh, tmp_path)
    assert torch.equal(fresh(IDS), model(IDS))


def test_save_refuses_own_keys_and_non_json(tmp_path):
    model = adapted(targets=["q_proj"])
    with pytest.raises(ValueError, match="written by lorakit itself"):
        save_adapter(model, tmp_path, config={"target_modules": []})
    with pytest.raises(TypeError):
        save_adapter(model, tmp_path / "x", config={"bad": object()})
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="no lorakit adapters"):
        save_adapter(tiny(), tmp_path / "y")


# every broken adapter directory: the load must fail before it changes anything
def _edit_tensors(path, fn):
    tensors = load_file(path / "adapter_model.safetensors")
    fn(tensors)
    save_file(tensors, path / "adapter_model.safetensors")


def _edit_config(path, fn):
    cfg = json.loads((path / "adapter_config.json").read_text())
    fn(cfg)
    (path / "adapter_config.json").write_text(json.dumps(cfg))


class OtherLoRA(LoRALinear):
    """Same tensors as LoRALinear, another class."""


K = "layers.1.q_proj.lora_B"
BAD_LOADS = {
    "wrong shape": (lambda p: _edit_tensors(p, lambda t: t.update({K: torch.zeros(8, 3)})),
                    r"wrong shape: layers.1.q_proj.lora_B: saved \(8, 3\), model expects \(8, 2\)"),
    "missing key": (lambda p: _edit_tensors(p, lambda t: t.pop(K)), r"missing keys \['layers.1.q_proj.lora_B'\]"),
    "extra key": (lambda p: _edit_tensors(p, lambda t: t.update({"layers.0.norm.weight": torch.ones(16)})),
                  r"unexpected keys \['layers.0.norm.weight'\]"),
    "nan": (lambda p: _edit_tensors(p, lambda t: t[K].fill_(float("nan"))), "NaN or Inf"),
    "wrong class": (lambda p: _edit_config(p, lambda c: c.update(adapter_class=f"{__name__}.OtherLoRA")),
                    "OtherLoRA|LoRALinear"),
    "unknown class": (lambda p: _edit_config(p, lambda c: c.update(adapter_class="os.system")),
                      "not a known lorakit adapter class"),
    "wrong rank": (lambda p: _edit_config(p, lambda c: c["adapter_kwargs"].update(rank=3)),
                   r"settings differ|shape|missing"),
    "wrong target": (lambda p: _edit_config(p, lambda c: c["target_modules"].append("layers.0.norm")),
                     "norm"),
    "absent target": (lambda p: _edit_config(p, lambda c: c["target_modules"].append("nope")), "nope"),
    "not lorakit": (lambda p: _edit_config(p, lambda c: c.update(format="x", peft_type="LORA")), "from_peft"),
    "bad bias": (lambda p: _edit_config(p, lambda c: c.update(bias="lora_only")), "bias must be one of"),
}


# (a plain model has no adapter class to disagree with: it gets the saved one)
@pytest.mark.parametrize("case, into", [(c, i) for c in BAD_LOADS for i in ("plain", "adapted")
                                        if (c, i) != ("wrong class", "plain")])
def test_bad_loads_raise_and_leave_the_model_unchanged(tmp_path, case, into):
    source = adapted(targets=["q_proj", "v_proj"])
    save_adapter(source, tmp_path)
    corrupt, message = BAD_LOADS[case]
    corrupt(tmp_path)
    model = tiny(7) if into == "plain" else adapted(seed=7, targets=["q_proj", "v_proj"])
    snap = snapshot(model)
    with pytest.raises(ValueError, match=message):
        load_adapter(model, tmp_path)
    assert_unchanged(model, snap)


def test_load_refuses_merged_layers_and_missing_files(tmp_path):
    source = adapted(targets=["q_proj"])
    save_adapter(source, tmp_path)
    model = adapted(seed=3, targets=["q_proj"])
    merge_adapters(model)
    snap = snapshot(model)
    with pytest.raises(MergeStateError, match="is merged"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="no adapter_config.json"):
        load_adapter(model, tmp_path / "nowhere")


def test_adapter_state_dict_holds_adapter_tensors_only():
    model = adapted(targets=["o_proj"])
    sd = adapter_state_dict(model)
    assert sorted(sd) == [f"layers.{i}.o_proj.lora_{m}" for i in range(2) for m in "AB"]
    assert all(not t.requires_grad for t in sd.values())
