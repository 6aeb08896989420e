# sample: correct layer; merge adds the shift to base_layer.bias in place, which fails when the base has no bias
# expect: partial
# fails: merge
# %% [rss_lora]
class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        self.lora_C = nn.Linear(cond_dim, rank, bias=False)
        self.lora_S = nn.Linear(cond_dim, rank, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x, p):
        view = (p.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        gate, shift = self.lora_C(p).view(view), self.lora_S(p).view(view)
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x) * gate + shift)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    with torch.no_grad():
        gate = layer.lora_C(p)
        layer.base_layer.weight += layer.scaling * layer.lora_B.weight @ (gate[:, None] * layer.lora_A.weight)
        layer.base_layer.bias += layer.scaling * layer.lora_B(layer.lora_S(p))
    return layer.base_layer
