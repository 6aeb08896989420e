# sample: correct; einsum forward, merge through a deep copy
# expect: full
# %% [lora_linear]
import copy


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.a = nn.Parameter(torch.randn(rank, d_in) * d_in ** -0.5)
        self.b = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x):
        h = torch.einsum("...i,ri->...r", x, self.a)
        return self.base_layer(x) + self.scaling * torch.einsum("...r,or->...o", h, self.b)
# %% [merge_lora]
def merge_lora(layer):
    merged = copy.deepcopy(layer.base_layer)
    delta = torch.einsum("or,ri->oi", layer.b, layer.a) * layer.scaling
    merged.weight.data += delta.detach()
    return merged
