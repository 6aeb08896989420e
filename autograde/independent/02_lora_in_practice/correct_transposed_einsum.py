# sample: count_lora_params matches on whole dotted components (name.split(".")[-k:] == target.split(".")), which is the same rule as equals-or-ends-with-"."+target; FixedLoRALinear stores the adapters transposed (A as (in, r), B as (r, out)), draws A's Kaiming-uniform bound 1/sqrt(in) by hand, applies F.dropout(x, p, self.training) on the adapter input and uses einsum
# expect: full
# %% [count_lora_params]
def count_lora_params(model, target_modules, rank):
    # Sum rank * (in_features + out_features) over the matching nn.Linear modules.
    wanted = [t.split(".") for t in target_modules]
    n = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not name:
            continue
        parts = name.split(".")
        if any(len(w) <= len(parts) and parts[len(parts) - len(w):] == w for w in wanted):
            n += rank * module.in_features + rank * module.out_features
    return n
# %% [fixed_lora_linear]
import math

import torch.nn.functional as F


class FixedLoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError("rank < 1 is not a LoRA adapter")
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.p = float(dropout)
        d_in, d_out = base_layer.in_features, base_layer.out_features
        w = base_layer.weight
        bound = 1.0 / math.sqrt(d_in)          # kaiming_uniform_(a=sqrt(5)) on a (r, in) matrix
        self.A_t = nn.Parameter(torch.empty(d_in, rank, dtype=w.dtype, device=w.device).uniform_(-bound, bound))
        self.B_t = nn.Parameter(torch.zeros(rank, d_out, dtype=w.dtype, device=w.device))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        xd = F.dropout(x, p=self.p, training=self.training)
        h = torch.einsum("...i,ir->...r", xd, self.A_t)
        delta = torch.einsum("...r,ro->...o", h, self.B_t)
        return self.base_layer(x) + self.scaling * delta
