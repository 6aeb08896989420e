# sample: correct; rpartition-based matching over modules(); nn.Parameter adapters and F.dropout
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    targets = set(target_modules)
    n = 0
    for name, module in model.named_modules():
        parts = name.split(".")
        suffixes = {".".join(parts[i:]) for i in range(len(parts))}
        if type(module) is nn.Linear and suffixes & targets:
            n += rank * module.weight.shape[1] + module.weight.shape[0] * rank
    return int(n)
# %% [fixed_lora_linear]
import torch.nn.functional as F


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError("rank must be a positive integer")
        for p in base_layer.parameters():
            p.requires_grad = False
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.p = dropout
        d_out, d_in = base_layer.weight.shape
        self.A = nn.Parameter(torch.randn(rank, d_in) / d_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x):
        h = F.dropout(x, self.p, self.training) @ self.A.T
        return self.base_layer(x) + self.scaling * h @ self.B.T
