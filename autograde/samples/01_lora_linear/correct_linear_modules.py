# sample: correct; nn.Linear adapters (Attempt #2 style), merge builds a new layer
# expect: full
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.down = nn.Linear(base_layer.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False)
        self.base_layer.requires_grad_(False)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.up(self.down(x))
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.up.weight @ layer.down.weight)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
