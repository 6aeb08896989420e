"""lorakit <-> PEFT: same target matching, and adapters that move both ways with the same outputs.

Everything runs on a tiny Llama built locally from a config (random, seeded weights; nothing is
downloaded).
"""
import copy
import json
import warnings

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from conftest import LAYER_CASES, TEST_SIZES  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lorakit import LoRALinear  # noqa: E402
from lorakit.interop.peft import PEFT_MAPPINGS, PeftMapping, from_peft, to_peft  # noqa: E402
from lorakit.layers.dora import DoRALinear  # noqa: E402
from lorakit.tuning import adapter_modules, adapter_state_dict, find_target_modules, inject_adapters  # noqa: E402

pytestmark = [
    # raised inside PEFT/transformers (PEFT 0.21 calls a transformers-5 deprecated method)
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    # PEFT's own warnings when the lora_bias case builds its (rejected) adapter
    pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed"),
    pytest.mark.filterwarnings("ignore:Adapter 'default'.*invalid shape"),
]


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config).eval()


IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def randomize(model, seed=1, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in sorted(adapter_state_dict(model).items()):
            t.add_(torch.randn(t.shape, generator=g) * scale)
    return model


def randomize_peft(model, seed=1, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def peft_targets(model):
    """Names (relative to the base model) of the layers PEFT put an adapter on."""
    prefix = "base_model.model."
    return sorted(n[len(prefix):] for n, m in model.named_modules()
                  if isinstance(m, peft.tuners.lora.LoraLayer))


def load_in_peft(base, path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(copy.deepcopy(base), path).eval()
    bad = [str(w.message) for w in caught if "key" in str(w.message).lower()]
    assert not bad, f"PEFT complained about the adapter's keys: {bad}"
    return model


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m)) for n, m in model.named_modules()])


def assert_unchanged(model, snap):
    state, modules = snap
    assert [(n, type(m)) for n, m in model.named_modules()] == modules
    now = model.state_dict()
    assert list(now) == list(state) and all(torch.equal(now[k], v) for k, v in state.items())


# --- the same target matching -------------------------------------------------------------------
@pytest.mark.parametrize("targets, exclude", [
    (["q_proj", "v_proj"], None),
    (["layers.1.self_attn.o_proj", "mlp.up_proj"], None),
    (r".*\.layers\.0\..*_proj", None),
    ("all-linear", None),
    ("all-linear", ["k_proj", "layers.0.mlp.down_proj"]),
    ("all-linear", r".*\.mlp\..*"),
])
def test_target_modules_select_what_peft_selects(base, targets, exclude):
    ours = find_target_modules(base, targets, exclude)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=2, target_modules=targets, exclude_modules=exclude))
    assert sorted(ours) == peft_targets(theirs)
    assert "lm_head" not in ours


# --- lorakit -> PEFT ----------------------------------------------------------------------------
def _uniform(model):
    inject_adapters(model, LoRALinear, ["q_proj", "v_proj", "down_proj"], rank=4, alpha=8)


def _mixed(model):                 # per-layer rank and alpha -> rank_pattern / alpha_pattern
    inject_adapters(model, LoRALinear, ["q_proj", "k_proj"], rank=4, alpha=8)
    inject_adapters(model, LoRALinear, ["gate_proj"], rank=2, alpha=3.5)
    inject_adapters(model, LoRALinear, ["layers.1.self_attn.v_proj"], rank=8, alpha=8)


def _one_layer(model):             # names that a short suffix cannot select: full names
    inject_adapters(model, LoRALinear, ["layers.0.self_attn.o_proj", "layers.1.mlp.up_proj"],
                    rank=3, alpha=6, dropout=0.1)


@pytest.mark.parametrize("setup", [_uniform, _mixed, _one_layer])
def test_to_peft_gives_identical_outputs_in_peft(base, tmp_path, setup):
    model = copy.deepcopy(base)
    setup(model)
    randomize(model).eval()
    config = to_peft(model, tmp_path, base_model_name_or_path="local/tiny-llama")
    assert config["peft_type"] == "LORA" and config["use_dora"] is False
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.model.layers.") and k.endswith(("lora_A.weight", "lora_B.weight"))
               for k in saved)
    theirs = load_in_peft(base, tmp_path)
    assert peft_targets(theirs) == sorted(adapter_modules(model))
    assert not torch.allclose(logits(model), logits(base))          # the adapters matter
    torch.testing.assert_close(logits(theirs), logits(model), rtol=1e-6, atol=1e-6)


def test_to_peft_config_is_readable(base, tmp_path):
    model = copy.deepcopy(base)
    _uniform(model)
    to_peft(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert (cfg["r"], cfg["lora_alpha"], cfg["rank_pattern"], cfg["alpha_pattern"]) == (4, 8, {}, {})
    loaded = LoraConfig.from_pretrained(tmp_path)
    assert loaded.r == 4 and loaded.lora_alpha == 8 and not loaded.use_rslora


def test_to_peft_rejects_what_peft_cannot_hold(base, tmp_path):
    class OtherLoRA(LoRALinear):
        pass

    with pytest.raises(ValueError, match="no lorakit adapters"):
        to_peft(copy.deepcopy(base), tmp_path)
    model = copy.deepcopy(base)
    inject_adapters(model, OtherLoRA, ["q_proj"], rank=2)
    with pytest.raises(ValueError, match=r"\['OtherLoRA'\] have no PEFT equivalent"):
        to_peft(model, tmp_path)
    model = copy.deepcopy(base)
    inject_adapters(model, LoRALinear, ["q_proj"], rank=2, dropout=0.1)
    inject_adapters(model, LoRALinear, ["v_proj"], rank=2, dropout=0.2)
    with pytest.raises(ValueError, match="one lora_dropout"):
        to_peft(model, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()


@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_every_family_exports_as_it_declares(base, tmp_path, case):
    """Each registered family: with a PEFT flavour (ADAPTER.peft), PEFT computes the same
    function from the export; without one, export refuses."""
    model = copy.deepcopy(base)
    sizes = {k: TEST_SIZES[k] for k in case.spec.sizes}
    inject_adapters(model, case.cls, ["q_proj", "v_proj"], rank=2, alpha=4, **sizes)
    if case.spec.peft is None:
        with pytest.raises(ValueError, match="no PEFT equivalent"):
            to_peft(model, tmp_path)
        return
    randomize(model).eval()
    config = to_peft(model, tmp_path)
    assert all(config[k] == v for k, v in case.spec.peft.flags.items())
    theirs = load_in_peft(base, tmp_path)
    torch.testing.assert_close(logits(theirs), logits(model), rtol=1e-5, atol=1e-5)


def test_conditioned_layers_are_not_exportable(base, tmp_path):
    from lorakit.layers.bilinear import BilinearLoRALinear
    model = copy.deepcopy(base)
    inject_adapters(model, BilinearLoRALinear, ["q_proj"], cond_dim=2, rank=2)
    with pytest.raises(ValueError, match="conditioned layers"):
        to_peft(model, tmp_path)


# --- PEFT -> lorakit ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(r=4, lora_alpha=16, target_modules="all-linear"),
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.1),
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj", "up_proj"],
         rank_pattern={"o_proj": 2, r"layers\.1\.self_attn\.q_proj": 8},
         alpha_pattern={"up_proj": 3}),
    dict(r=4, lora_alpha=8, target_modules=["k_proj", "down_proj"], use_rslora=True),
], ids=["all-linear", "dropout", "patterns", "rslora"])
def test_from_peft_gives_identical_outputs(base, tmp_path, kwargs):
    theirs = randomize_peft(get_peft_model(copy.deepcopy(base), LoraConfig(**kwargs))).eval()
    theirs.save_pretrained(tmp_path)
    ours = copy.deepcopy(base)
    names = from_peft(ours, tmp_path)
    ours.eval()
    assert names == peft_targets(theirs) == sorted(adapter_modules(ours))
    for name, layer in adapter_modules(ours).items():
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert layer.rank == peft_layer.r["default"]
        assert layer.scaling == pytest.approx(peft_layer.scaling["default"], rel=1e-12)
        assert layer.dropout_p == kwargs.get("lora_dropout", 0.0)
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-6, atol=1e-6)


def test_round_trip_lorakit_peft_lorakit_is_exact(base, tmp_path):
    model = copy.deepcopy(base)
    _mixed(model)
    randomize(model).eval()
    to_peft(model, tmp_path)
    back = copy.deepcopy(base)
    from_peft(back, tmp_path)
    back.eval()
    a, b = adapter_state_dict(model), adapter_state_dict(back)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert all(back.get_submodule(n).alpha == m.alpha for n, m in adapter_modules(model).items())
    assert torch.equal(logits(back), logits(model))


def test_dora_maps_to_use_dora_both_ways(base, tmp_path):
    assert PEFT_MAPPINGS[DoRALinear].flags == {"use_dora": True}
    model = copy.deepcopy(base)
    inject_adapters(model, DoRALinear, ["q_proj", "up_proj"], rank=4, alpha=8)
    randomize(model, scale=0.05).eval()
    assert to_peft(model, tmp_path / "out")["use_dora"] is True
    theirs = load_in_peft(base, tmp_path / "out")
    torch.testing.assert_close(logits(theirs), logits(model), rtol=1e-5, atol=1e-5)

    theirs = randomize_peft(get_peft_model(copy.deepcopy(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["k_proj", "o_proj"], use_dora=True)), scale=0.05).eval()
    theirs.save_pretrained(tmp_path / "in")
    ours = copy.deepcopy(base)
    from_peft(ours, tmp_path / "in")
    assert all(type(m) is DoRALinear for m in adapter_modules(ours).values())
    torch.testing.assert_close(logits(ours.eval()), logits(theirs), rtol=1e-5, atol=1e-5)


def _saved_peft_adapter(base, path, **kwargs):
    model = get_peft_model(copy.deepcopy(base), LoraConfig(
        **{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], **kwargs}))
    randomize_peft(model).save_pretrained(path)


def _edit_config(path, **changes):
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def _edit_tensors(path, fn):
    tensors = load_file(path / "adapter_model.safetensors")
    fn(tensors)
    save_file(tensors, path / "adapter_model.safetensors")


Q = "base_model.model.model.layers.0.self_attn.q_proj"
BAD_PEFT = {
    "lora_bias": (dict(lora_bias=True), None, "lora_bias"),
    "bias all": (dict(bias="all"), None, "bias='all'"),
    "modules_to_save": (dict(modules_to_save=["lm_head"]), None, "modules_to_save"),
    "pissa": ({}, lambda p: _edit_config(p, init_lora_weights="pissa"), "rewrites the base weights"),
    "fan_in_fan_out": ({}, lambda p: _edit_config(p, fan_in_fan_out=True), "Conv1D"),
    "not lora": ({}, lambda p: _edit_config(p, peft_type="IA3"), "only PEFT LoRA adapters"),
    "dora unregistered": ({}, lambda p: _edit_config(p, use_dora=True, future_option=None),
                          "no lorakit adapter is registered"),
    "unknown option": ({}, lambda p: _edit_config(p, brand_new_option=3), "brand_new_option"),
    "wrong rank": ({}, lambda p: _edit_config(p, r=3), r"expected \(3, 64\)"),
    "stray tensor": ({}, lambda p: _edit_tensors(p, lambda t: t.update(
        {"base_model.model.lm_head.weight": torch.zeros(128, 64)})), "unexpected tensors"),
    "missing B": ({}, lambda p: _edit_tensors(p, lambda t: t.pop(f"{Q}.lora_B.weight")), "missing"),
    "absent module": ({}, lambda p: _edit_tensors(p, lambda t: t.update(
        {"base_model.model.model.nope.lora_A.weight": torch.zeros(2, 64),
         "base_model.model.model.nope.lora_B.weight": torch.zeros(64, 2)})), "no such module"),
    "pickle only": ({}, lambda p: (p / "adapter_model.safetensors").unlink(), "adapter_model.bin"),
}


@pytest.mark.parametrize("case", list(BAD_PEFT))
def test_from_peft_rejects_and_leaves_the_model_unchanged(base, tmp_path, case, monkeypatch):
    peft_kwargs, corrupt, message = BAD_PEFT[case]
    if case == "dora unregistered" and DoRALinear is not None:
        monkeypatch.delitem(PEFT_MAPPINGS, DoRALinear)
    _saved_peft_adapter(base, tmp_path, **peft_kwargs)
    if corrupt:
        corrupt(tmp_path)
    model = copy.deepcopy(base)
    snap = snapshot(model)
    with pytest.raises(ValueError, match=message):
        from_peft(model, tmp_path)
    assert_unchanged(model, snap)


def test_from_peft_into_a_model_of_another_shape_fails_cleanly(tmp_path):
    _saved_peft_adapter(_llama(hidden=64), tmp_path)
    other = _llama(hidden=32)
    snap = snapshot(other)
    with pytest.raises(ValueError, match=r"lora_A \(2, 64\).*expected \(2, 32\)"):
        from_peft(other, tmp_path)
    assert_unchanged(other, snap)


def _llama(hidden):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=128))


def test_registry_is_the_extension_point(monkeypatch, base, tmp_path):
    """A new adapter class becomes exportable by registering how its tensors map to PEFT's."""
    class ScaledLoRA(LoRALinear):
        pass

    lora = PEFT_MAPPINGS[LoRALinear]
    monkeypatch.setitem(PEFT_MAPPINGS, ScaledLoRA, PeftMapping(
        ScaledLoRA, {"use_dora": False}, lora.suffixes, lora.export, lora.load))
    model = copy.deepcopy(base)
    inject_adapters(model, ScaledLoRA, ["q_proj"], rank=2)
    randomize(model).eval()
    to_peft(model, tmp_path)
    torch.testing.assert_close(logits(load_in_peft(base, tmp_path)), logits(model), rtol=1e-6, atol=1e-6)


def test_plain_torch_model_exports_too(tmp_path):
    """PEFT also adapts plain nn.Modules; the exported adapter works there as well."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(0)
    net = Net()
    model = copy.deepcopy(net)
    inject_adapters(model, LoRALinear, "all-linear", rank=2, alpha=2)
    randomize(model)
    to_peft(model, tmp_path)
    theirs = PeftModel.from_pretrained(copy.deepcopy(net), tmp_path)
    x = torch.randn(5, 6)
    torch.testing.assert_close(theirs(x), model(x), rtol=1e-6, atol=1e-6)
