# sample: gate and shift used without reshaping: p is lined up with the wrong dims of x
# expect: partial
# fails: shapes, per-sample conditioning
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
        gate, shift = self.lora_C(p), self.lora_S(p)
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x) * gate + shift)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features)
    with torch.no_grad():
        gate = layer.lora_C(p)
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B.weight @ (gate[:, None] * layer.lora_A.weight))
        bias = base.bias if base.bias is not None else torch.zeros(base.out_features)
        merged.bias.copy_(bias + layer.scaling * layer.lora_B(layer.lora_S(p)))
    return merged
