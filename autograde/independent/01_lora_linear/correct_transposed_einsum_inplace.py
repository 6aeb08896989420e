# sample: adapters stored transposed (A as (in, rank), B as (rank, out)) with a scaled-normal A, forward with torch.einsum in rank space; merge_lora folds the update into layer.base_layer in place under torch.no_grad and returns it (the contract allows this)
# expect: full
# %% [lora_linear]
import math


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        w = base_layer.weight
        # stored the "x @ A @ B" way round: A_t is (in, rank), B_t is (rank, out)
        self.A_t = nn.Parameter(torch.randn(in_features, rank, dtype=w.dtype, device=w.device)
                                / math.sqrt(in_features))
        self.B_t = nn.Parameter(torch.zeros(rank, out_features, dtype=w.dtype, device=w.device))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        h = torch.einsum("...i,ir->...r", x, self.A_t)
        delta = torch.einsum("...r,ro->...o", h, self.B_t)
        return self.base_layer(x) + self.scaling * delta
# %% [merge_lora]
def merge_lora(layer):
    base = layer.base_layer
    with torch.no_grad():
        # (A_t @ B_t) is (in, out): transpose it to the (out, in) layout of nn.Linear.weight
        base.weight += layer.scaling * (layer.A_t @ layer.B_t).T
    return base
