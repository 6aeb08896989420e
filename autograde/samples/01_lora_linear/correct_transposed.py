# sample: correct; the seed's orientation A (in, r), B (r, out), x @ A @ B
# expect: full
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.randn(base_layer.in_features, rank) / rank)
        self.B = nn.Parameter(torch.zeros(rank, base_layer.out_features))
        for p in base_layer.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + (x @ self.A @ self.B) * self.scaling
# %% [merge_lora]
def merge_lora(layer):
    with torch.no_grad():
        layer.base_layer.weight.add_((layer.A @ layer.B).T, alpha=layer.scaling)
    return layer.base_layer
