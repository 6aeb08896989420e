# sample: refuses bad ranks with assert rank > 0, so rank = 0 or -1 raises AssertionError instead of the ValueError the contract asks for (and under python -O nothing is checked, rank 0 then dies with ZeroDivisionError); everything else, and count_lora_params, is correct
# expect: partial
# bug: rank validation raises the wrong exception (assert instead of ValueError)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        assert rank > 0, "rank must be positive"
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
