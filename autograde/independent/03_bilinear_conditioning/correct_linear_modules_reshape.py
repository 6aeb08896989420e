# sample: A, B and C are bias-free nn.Linear modules (Kaiming-uniform A and C by nn.Linear's own init, B zeroed); the gate C(p) is reshaped to (B, 1, ..., 1, rank) to match A(x); merge_conditioned deep-copies the base layer and adds s·(B ⊙ g) A to the copy's weight under torch.no_grad
# expect: full
# %% [bilinear_lora]
import copy


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        w = base_layer.weight
        self.down = nn.Linear(base_layer.in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        self.up = nn.Linear(rank, base_layer.out_features, bias=False, device=w.device, dtype=w.dtype)
        self.cond = nn.Linear(cond_dim, rank, bias=False, device=w.device, dtype=w.dtype)
        nn.init.zeros_(self.up.weight)

    def forward(self, x, p):
        h = self.down(x)                                   # (B, ..., r)
        g = self.cond(p)                                   # (B, r)
        g = g.reshape(g.shape[0], *([1] * (h.dim() - 2)), g.shape[-1])
        return self.base_layer(x) + self.scaling * self.up(h * g)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    merged = copy.deepcopy(layer.base_layer)
    with torch.no_grad():
        g = layer.cond.weight @ p                          # (r,)
        delta = (layer.up.weight * g) @ layer.down.weight  # B diag(g) A, (out, in)
        merged.weight.add_(layer.scaling * delta)
    return merged.requires_grad_(False)
