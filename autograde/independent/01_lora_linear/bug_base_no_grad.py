# sample: computes the frozen base path under torch.no_grad() "to save memory"; A and B still train, but no gradient flows back to x through W, so stacked LoRA layers (or anything before this layer) stop learning; PASSES ALL VISIBLE TESTS: none of them checks the gradient w.r.t. x
# expect: partial
# bug: base path under no_grad (no gradient to the input)
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
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in self.base_layer.parameters():
            p.requires_grad = False

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        with torch.no_grad():                       # the base is frozen anyway
            base_out = self.base_layer(x)
        return base_out + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(base.weight + layer.scaling * layer.lora_B @ layer.lora_A)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged
