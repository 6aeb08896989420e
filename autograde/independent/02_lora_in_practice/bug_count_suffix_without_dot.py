# sample: matches with name.endswith(target) and forgets the "." in front, so a target matches any name that merely ends with the same letters: "proj" matches every q_proj/k_proj/.../down_proj (the notebook says it must match none) and "c_proj" would also match "h.0.attn.xc_proj"; exact names like "q_proj" still count right, so the visible q_proj assert passes; FixedLoRALinear is correct
# expect: partial
# bug: target matching is not PEFT's rule (suffix without the "." boundary)
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            for target in target_modules:
                if name.endswith(target):
                    total += rank * (module.in_features + module.out_features)
                    break
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
