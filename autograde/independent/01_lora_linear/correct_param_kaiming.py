# sample: nn.Parameter adapters A (rank, in) Kaiming-uniform and B (out, rank) zeros, forward via F.linear in rank space, merge builds a fresh nn.Linear under torch.no_grad (the given layer is untouched)
# expect: full
# %% [lora_linear]
import math

import torch.nn.functional as F


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in self.base_layer.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        h = F.linear(x, self.lora_A)          # (..., rank)
        delta = F.linear(h, self.lora_B)      # (..., out)
        return self.base_layer(x) + self.scaling * delta
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    has_bias = base.bias is not None
    merged = nn.Linear(base.in_features, base.out_features, bias=has_bias,
                       device=base.weight.device, dtype=base.weight.dtype)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * (layer.lora_B @ layer.lora_A))
        if has_bias:
            merged.bias.copy_(base.bias)
    merged.requires_grad_(False)
    return merged
