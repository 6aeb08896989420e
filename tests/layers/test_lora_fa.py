"""LoRA-FA (lorakit/layers/lora_fa.py): LoRA's function with A frozen.

What is special about it; the layer-generic tests (tests/conftest.py's LAYER_CASES: fast paths,
compile, CUDA, save/load, parameter counts, bench) cover it as a registered family.
"""
import torch
from torch import nn

from lorakit import LoRALinear
from lorakit.interop.peft import from_peft, to_peft
from lorakit.layers.lora_fa import LoRAFALinear
from lorakit.tuning import (
    adapter_modules,
    inject_adapters,
    load_adapter,
    loraplus_param_groups,
    mark_only_adapters_trainable,
    save_adapter,
)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))


def test_it_computes_lora_with_the_same_A_and_B():
    torch.manual_seed(1)
    fa = LoRAFALinear(nn.Linear(6, 5), rank=2, alpha=4.0)
    lora = LoRALinear(fa.base_layer, rank=2, alpha=4.0)
    with torch.no_grad():
        fa.lora_B.normal_()
        lora.lora_A.copy_(fa.lora_A)
        lora.lora_B.copy_(fa.lora_B)
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(fa(x), lora(x), rtol=0, atol=0)


def test_A_stays_frozen_through_training_tools_and_steps():
    model = tiny()
    inject_adapters(model, LoRAFALinear, ["0", "2"], rank=2, alpha=4.0)
    mark_only_adapters_trainable(model)
    A0 = {n: a.lora_A.clone() for n, a in adapter_modules(model).items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["0.lora_B", "2.lora_B"]
    groups = loraplus_param_groups(model, lr=1e-2, ratio=4)
    assert [g["name"] for g in groups] == ["lora_B"]
    opt = torch.optim.AdamW(groups)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 6)).square().mean().backward()
        opt.step()
    for n, a in adapter_modules(model).items():
        assert torch.equal(a.lora_A, A0[n])
        assert a.lora_B.abs().sum() > 0


def test_save_load_keeps_the_frozen_A(tmp_path):
    model = tiny()
    inject_adapters(model, LoRAFALinear, ["2"], rank=3, alpha=6.0)
    with torch.no_grad():
        model[2].lora_B.normal_()
    save_adapter(model, tmp_path)
    torch.manual_seed(123)          # a fresh layer would draw another A
    fresh = tiny()
    load_adapter(fresh, tmp_path)
    assert type(fresh[2]) is LoRAFALinear
    assert torch.equal(fresh[2].lora_A, model[2].lora_A)
    x = torch.randn(2, 6)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_exported_to_peft_it_loads_back_as_plain_lora_with_the_same_function(tmp_path):
    model = tiny()
    inject_adapters(model, LoRAFALinear, ["0", "2"], rank=2, alpha=4.0)
    with torch.no_grad():
        for a in adapter_modules(model).values():
            a.lora_B.normal_()
    to_peft(model, tmp_path)
    back = tiny()
    from_peft(back, tmp_path)
    assert {type(a) for a in adapter_modules(back).values()} == {LoRALinear}
    x = torch.randn(2, 6)
    torch.testing.assert_close(back(x), model(x))
