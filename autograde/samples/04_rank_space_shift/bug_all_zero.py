# sample: starts B, C and S all at zero: no gradient ever reaches any of them
# expect: partial
# fails: gradients
# %% [rss_lora]
class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.1)
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.C = nn.Parameter(torch.zeros(rank, cond_dim))
        self.S = nn.Parameter(torch.zeros(rank, cond_dim))

    def forward(self, x, p):
        view = (p.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        z = (x @ self.A.T) * (p @ self.C.T).view(view) + (p @ self.S.T).view(view)
        return self.base_layer(x) + self.scaling * z @ self.B.T
# %% [merge_conditioned]
@torch.no_grad()
def merge_conditioned(layer, p):
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features)
    merged.weight.copy_(base.weight + layer.scaling * layer.B @ torch.diag(layer.C @ p) @ layer.A)
    merged.bias.copy_((base.bias if base.bias is not None else 0) + layer.scaling * layer.B @ (layer.S @ p))
    return merged
