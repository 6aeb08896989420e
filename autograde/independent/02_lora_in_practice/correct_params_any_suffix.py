# sample: count_lora_params walks named_modules once, keeps nn.Linear only and matches with any(name == t or name.endswith("." + t)); FixedLoRALinear with nn.Parameter A (rank, in) Kaiming-uniform and B (out, rank) zeros on the base weight's dtype/device, nn.Dropout (nn.Identity at p = 0) on the adapter input, forward via F.linear
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(name == t or name.endswith("." + t) for t in target_modules):
            total += rank * (module.in_features + module.out_features)
    return total
# %% [fixed_lora_linear]
import math

import torch.nn.functional as F


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        h = F.linear(self.lora_dropout(x), self.lora_A)       # (..., rank)
        return self.base_layer(x) + self.scaling * F.linear(h, self.lora_B)
