# sample: three bias-free nn.Linear modules for A, C and B, the gate broadcast with an einsum over the flattened middle dims (x reshaped to (B, N, in)), merge folds the update into base_layer in place under torch.no_grad and returns it
# expect: full
# %% [bilinear_lora]
import math


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer          # the frozen nn.Linear; weight (out_features, in_features)
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        ref = base_layer.weight
        self.down = nn.Linear(base_layer.in_features, rank, bias=False, device=ref.device, dtype=ref.dtype)
        self.cond = nn.Linear(cond_dim, rank, bias=False, device=ref.device, dtype=ref.dtype)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False, device=ref.device, dtype=ref.dtype)
        # nn.Linear already initialises down and cond with kaiming_uniform_(a=sqrt(5)); only B is reset
        nn.init.zeros_(self.up.weight)

    def forward(self, x, p):
        # x: (B, ..., in_features), p: (B, cond_dim) -> (B, ..., out_features)
        lead = x.shape[:-1]
        xb = x.reshape(x.shape[0], -1, x.shape[-1])       # (B, N, in)
        h = self.down(xb)                                   # (B, N, r)
        g = self.cond(p)                                    # (B, r)
        z = torch.einsum("bnr,br->bnr", h, g)
        upd = self.up(z).reshape(*lead, -1)                 # (B, ..., out)
        return self.base_layer(x) + self.scaling * upd
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    # p: (cond_dim,). Return an nn.Linear that computes layer(x, p) for this p.
    base = layer.base_layer
    with torch.no_grad():
        g = layer.cond.weight @ p.to(layer.cond.weight)               # (r,)
        A, B = layer.down.weight, layer.up.weight
        base.weight += layer.scaling * torch.einsum("or,r,ri->oi", B, g, A)
    return base
