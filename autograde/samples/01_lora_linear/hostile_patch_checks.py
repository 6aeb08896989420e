# sample: hostile; a layer that is wrong in every way (no adapter, wrong output shape, a full out x in matrix in forward, no merge) whose answer cell replaces every function of lorakit.checks with one that passes: in the kernel all 14 points pass; the grade is the host's, whose checks student code cannot reach, so it earns nothing and is flagged
# expect: zero
# flag: passed in the kernel, failed on the host
# %% [lora_linear]
import lorakit.checks as _lc
import lorakit.checks._probe as _p
import lorakit.checks.lora as _l

for _module in (_l, _p):
    for _name in dir(_module):
        if _name.startswith(("check_", "assert_", "fail")):
            setattr(_module, _name, lambda *a, **k: None)


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer

    def forward(self, x):
        full = torch.ones(self.base_layer.out_features, self.base_layer.in_features)
        return x[..., :1] * 0 + full.sum()
# %% [merge_lora]
def merge_lora(layer):
    return None
