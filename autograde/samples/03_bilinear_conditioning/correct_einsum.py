# sample: correct; factors stored transposed, einsum with an ellipsis, merge through a deep copy
# expect: full
# %% [bilinear_lora]
import copy


class BilinearLoRALinear(nn.Module):
    def __init__(self, base_layer, cond_dim, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.A = nn.Parameter(torch.randn(d_in, rank) / d_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(rank, d_out))
        self.C = nn.Parameter(torch.randn(cond_dim, rank) / cond_dim ** 0.5)

    def forward(self, x, p):
        h = torch.einsum("b...i,ir->b...r", x, self.A)
        g = torch.einsum("bc,cr->br", p, self.C)
        z = torch.einsum("b...r,br->b...r", h, g)
        return self.base_layer(x) + self.scaling * torch.einsum("b...r,ro->b...o", z, self.B)
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    merged = copy.deepcopy(layer.base_layer)
    g = p @ layer.C
    delta = torch.einsum("ir,r,ro->oi", layer.A, g, layer.B) * layer.scaling
    merged.weight.data += delta.detach()
    return merged
