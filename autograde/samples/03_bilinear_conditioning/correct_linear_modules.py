# sample: correct; three bias-free nn.Linear factors, unsqueeze in a loop, merge into a new layer
# expect: full
# %% [bilinear_lora]
class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        for param in base_layer.parameters():
            param.requires_grad = False
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.down = nn.Linear(base_layer.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False)
        self.cond = nn.Linear(cond_dim, rank, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x, p):
        gate = self.cond(p)
        while gate.dim() < x.dim():
            gate = gate.unsqueeze(1)
        return self.base_layer(x) + self.scaling * self.up(self.down(x) * gate)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        gate = layer.cond(p)
        delta = layer.up.weight @ (gate[:, None] * layer.down.weight)
        merged.weight.copy_(base.weight + layer.scaling * delta)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
