# sample: count_lora_params is right; FixedLoRALinear refuses bad ranks with "assert rank > 0" instead of raising ValueError
# expect: partial
# bug: bad ranks fail with AssertionError (and not at all under python -O) instead of the ValueError the contract asks for
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
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
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
