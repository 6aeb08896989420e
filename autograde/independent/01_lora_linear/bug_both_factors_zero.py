# sample: initialises both A and B with zeros ("start from exactly nothing"); shapes, freezing, forward, scaling and merge are right
# expect: partial
# bug: wrong init: with A = 0 and B = 0 neither factor ever gets a gradient (dL/dB needs Ax != 0, dL/dA needs B != 0), so the adapter can never learn; A must start random
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
