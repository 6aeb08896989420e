# sample: builds the full update matrix B diag(Cp) A for every sample in forward
# expect: partial
# fails: low-rank order
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
        gate = self.lora_C(p)                                                  # (B, r)
        delta = torch.einsum("or,br,ri->boi", self.lora_B.weight, gate, self.lora_A.weight)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.einsum("bni,boi->bno", flat, delta).reshape(*x.shape[:-1], -1)
        return self.base_layer(x) + self.scaling * out
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    with torch.no_grad():
        gate = layer.lora_C(p)
        layer.base_layer.weight += layer.scaling * layer.lora_B.weight @ (gate[:, None] * layer.lora_A.weight)
    return layer.base_layer
