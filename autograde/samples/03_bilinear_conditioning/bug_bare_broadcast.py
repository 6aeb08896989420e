# sample: gate multiplied without reshaping: h * C(p) lines p up with the wrong dims of x
# expect: partial
# fails: shapes, per-sample conditioning
# %% [bilinear_lora]
class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        self.lora_C = nn.Linear(cond_dim, rank, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x, p):
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x) * self.lora_C(p))
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    with torch.no_grad():
        gate = layer.lora_C(p)
        layer.base_layer.weight += layer.scaling * layer.lora_B.weight @ (gate[:, None] * layer.lora_A.weight)
    return layer.base_layer
