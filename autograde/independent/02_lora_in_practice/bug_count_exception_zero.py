# sample: has no isinstance(nn.Linear) test and reads module.in_features of whatever matches, wrapping the loop in try/except AttributeError -> return 0 ("it matched something that is not a layer"); as soon as one target names a non-Linear module (embed_tokens, self_attn, mlp, a norm) the whole answer becomes 0, even though the Linear layers the other targets match would get adapters; Linear-only targets count right; FixedLoRALinear is correct
# expect: partial
# bug: exception swallowed into 0 (a non-Linear match zeroes the whole count instead of being skipped)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    try:
        for name, module in model.named_modules():
            if any(name == t or name.endswith("." + t) for t in target_modules):
                total += rank * (module.in_features + module.out_features)
    except AttributeError:
        return 0
    return total
# %% [fixed_lora_linear]
import math


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank must be >= 1")
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        return self.base_layer(x) + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
