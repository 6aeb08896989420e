# sample: correct; factors stored transposed, flattened middle dims, merge read off by probing with the identity
# expect: full
# %% [rss_lora]
class RSSBilinearLoRA(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        base_layer.weight.requires_grad = False
        if base_layer.bias is not None:
            base_layer.bias.requires_grad = False
        self.scaling = alpha / rank
        self.a = nn.Parameter(torch.empty(base_layer.in_features, rank).uniform_(-0.2, 0.2))
        self.b = nn.Parameter(torch.zeros(rank, base_layer.out_features))
        self.c = nn.Parameter(torch.empty(cond_dim, rank).uniform_(-0.5, 0.5))
        self.s = nn.Parameter(torch.empty(cond_dim, rank).uniform_(-0.5, 0.5))

    def forward(self, x, p):
        batch = x.shape[0]
        flat = x.reshape(batch, -1, x.shape[-1])                 # (B, N, in)
        z = (flat @ self.a) * (p @ self.c)[:, None, :] + (p @ self.s)[:, None, :]
        delta = (z @ self.b).reshape(*x.shape[:-1], -1)
        return self.base_layer(x) + self.scaling * delta
# %% [merge_conditioned]
@torch.no_grad()
def merge_conditioned(layer, p):
    base = layer.base_layer
    n = base.in_features
    eye, zero = torch.eye(n)[None], torch.zeros(1, 1, n)
    pb = p[None]
    shift = layer(zero, pb)[0, 0] - base(zero)[0, 0]              # the update at x = 0
    weight = (layer(eye, pb)[0] - base(eye)[0] - shift).T         # (out, in)
    merged = nn.Linear(n, base.out_features)
    merged.weight.copy_(base.weight + weight)
    merged.bias.copy_((base.bias if base.bias is not None else 0) + shift)
    return merged
