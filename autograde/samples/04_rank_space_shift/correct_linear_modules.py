# sample: correct; four bias-free nn.Linear factors, unsqueeze in a loop, merge into a new nn.Linear (with a bias even if the base has none)
# expect: full
# %% [rss_lora]
class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        for param in base_layer.parameters():
            param.requires_grad = False
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.down = nn.Linear(base_layer.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False)
        self.gate = nn.Linear(cond_dim, rank, bias=False)
        self.shift = nn.Linear(cond_dim, rank, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x, p):
        g, b = self.gate(p), self.shift(p)
        while g.dim() < x.dim():
            g, b = g.unsqueeze(1), b.unsqueeze(1)
        return self.base_layer(x) + self.scaling * self.up(self.down(x) * g + b)
# %% [merge_conditioned]
@torch.no_grad()
def merge_conditioned(layer, p):
    base = layer.base_layer
    g = layer.gate(p)
    merged = nn.Linear(base.in_features, base.out_features, bias=True)
    merged.weight.copy_(base.weight + layer.scaling * layer.up.weight @ (g[:, None] * layer.down.weight))
    shift = layer.scaling * layer.up(layer.shift(p))
    merged.bias.copy_(shift if base.bias is None else base.bias + shift)
    return merged
