# sample: correct; named_modules + suffix match; the seed's layer repaired with nn.Linear adapters
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(name == t or name.endswith("." + t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.r = rank
        self.lora_alpha = alpha
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)   # down: in -> r
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)  # up: r -> out
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
