# sample: writes self.scaling = alpha // rank (integer division, as for a count); everything else is right
# expect: partial
# bug: wrong scaling: alpha // rank floors to 0 for the default alpha=1, rank=4 (and to 2 instead of 2.67 for alpha=8, rank=3), so the update is switched off or mis-scaled; the scaling must be the real number alpha / rank
# %% [lora_linear]
import math


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha // rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
