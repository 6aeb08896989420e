# sample: starts C at zero as well as B: every gradient is zero and the adapter never trains
# expect: partial
# fails: gradients
# %% [bilinear_lora]
class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.lora_C = nn.Parameter(torch.zeros(rank, cond_dim))

    def forward(self, x, p):
        h = x @ self.lora_A.T
        c = (p @ self.lora_C.T).view(p.shape[0], *[1] * (x.dim() - 2), -1)
        return self.base_layer(x) + self.scaling * (h * c) @ self.lora_B.T
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    with torch.no_grad():
        layer.base_layer.weight += layer.scaling * layer.lora_B @ torch.diag(layer.lora_C @ p) @ layer.lora_A
    return layer.base_layer
