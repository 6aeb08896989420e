# sample: adapters stored transposed (A as (in, rank), B as (rank, out)) with einsum in forward, kaiming-uniform computed by hand, merge builds a new nn.Linear from detached tensors with nn.Parameter
# expect: full
# %% [lora_linear]
import math


class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        for p in base_layer.parameters():
            p.requires_grad = False
        bound = 1 / math.sqrt(in_features)
        ref = base_layer.weight
        # stored as the transposes: down (in, r), up (r, out)
        self.down = nn.Parameter(torch.empty(in_features, rank, dtype=ref.dtype, device=ref.device).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(rank, out_features, dtype=ref.dtype, device=ref.device))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        h = torch.einsum("...i,ir->...r", x, self.down)
        update = torch.einsum("...r,ro->...o", h, self.up)
        return self.base_layer(x) + self.scaling * update
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    down, up = layer.down.detach(), layer.up.detach()
    delta = (down @ up).T * layer.scaling                     # (out, in)
    out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    out.weight = nn.Parameter(base.weight.detach() + delta)
    if base.bias is not None:
        out.bias = nn.Parameter(base.bias.detach().clone())
    return out.to(base.weight.device)
