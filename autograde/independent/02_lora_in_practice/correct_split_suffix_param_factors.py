# sample: count_lora_params compares the dotted name split into parts with the target split into parts (suffix match on whole components) and reads the shapes from module.weight; FixedLoRALinear keeps A (rank, in) Kaiming-uniform and B (out, rank) zeros as nn.Parameters, an nn.Dropout (or nn.Identity for p = 0) on the adapter input, and raises ValueError for rank < 1
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    targets = [t.split(".") for t in target_modules]
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        parts = name.split(".")
        if any(len(t) <= len(parts) and parts[len(parts) - len(t):] == t for t in targets):
            out_f, in_f = module.weight.shape
            total += rank * (in_f + out_f)
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        h = self.lora_dropout(x) @ self.lora_A.T
        return self.base_layer(x) + self.scaling * (h @ self.lora_B.T)
