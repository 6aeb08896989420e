# sample: A, B, C stored transposed as nn.Parameters (A_t (in, r), B_t (r, out), C_t (cond, r)), A and C drawn from a scaled normal; forward flattens the middle dims, works with einsum and restores the shape; merge_conditioned folds the update into layer.base_layer in place under torch.no_grad (allowed by the notebook)
# expect: full
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        for q in base_layer.parameters():
            q.requires_grad_(False)
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.A_t = nn.Parameter(torch.randn(d_in, rank) / math.sqrt(d_in))
        self.C_t = nn.Parameter(torch.randn(cond_dim, rank) / math.sqrt(cond_dim))
        self.B_t = nn.Parameter(torch.zeros(rank, d_out))

    def forward(self, x, p):
        lead = x.shape[:-1]
        xs = x.reshape(x.shape[0], -1, x.shape[-1])               # (B, N, in)
        h = torch.einsum("bni,ir->bnr", xs, self.A_t)
        g = torch.einsum("bc,cr->br", p, self.C_t)
        delta = torch.einsum("bnr,ro->bno", h * g[:, None, :], self.B_t)
        return self.base_layer(x) + self.scaling * delta.reshape(*lead, -1)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    base = layer.base_layer
    with torch.no_grad():
        g = p @ layer.C_t                                          # (r,)
        delta_t = (layer.A_t * g) @ layer.B_t                      # A^T diag(g) B^T: (in, out)
        base.weight.add_(layer.scaling * delta_t.T)
    return base
