# sample: takes seed 002's "8 r d_model for four projections" at face value and counts 2 * r * in_features per matching nn.Linear, i.e. assumes every adapted layer is square; right for q_proj/o_proj (so the visible q_proj assert passes), wrong for TinyLM's grouped-query k_proj/v_proj (128 -> 64), gate/up/down_proj and lm_head; FixedLoRALinear is correct
# expect: partial
# bug: parameter count assumes square layers (2 r d instead of r (in + out))
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            d = module.in_features
            total += 2 * rank * d           # A is r x d, B is d x r
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
