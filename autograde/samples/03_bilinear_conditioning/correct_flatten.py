# sample: correct; flattens the middle dims, F.linear, repeat_interleave of p, merge via F.linear of an identity
# expect: full
# %% [bilinear_lora]
import torch.nn.functional as F


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        base_layer.weight.requires_grad = False
        if base_layer.bias is not None:
            base_layer.bias.requires_grad = False
        self.scaling = alpha / rank
        self.a = nn.Parameter(torch.empty(rank, base_layer.in_features).uniform_(-0.2, 0.2))
        self.b = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.c = nn.Parameter(torch.empty(rank, cond_dim).uniform_(-0.5, 0.5))

    def forward(self, x, p):
        batch = x.shape[0]
        flat = x.reshape(batch, -1, x.shape[-1])                # (B, N, in)
        n = flat.shape[1]
        gate = F.linear(p, self.c).repeat_interleave(n, dim=0)  # (B*N, r)
        h = F.linear(flat.reshape(batch * n, -1), self.a)       # (B*N, r)
        delta = F.linear(h * gate, self.b).reshape(*x.shape[:-1], -1)
        return self.base_layer(x) + self.scaling * delta
# %% [merge_conditioned]
@torch.no_grad()
def merge_conditioned(layer, p):
    base = layer.base_layer
    eye = torch.eye(base.in_features)
    delta = layer(eye, p.expand(base.in_features, -1)) - base(eye)   # row i: update of e_i
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    merged.weight.copy_(base.weight + delta.T)
    if base.bias is not None:
        merged.bias.copy_(base.bias)
    return merged
