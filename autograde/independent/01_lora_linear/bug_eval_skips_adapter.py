# sample: treats the adapter like dropout and returns only base_layer(x) when the module is in eval() mode, so a trained LoRA layer behaves like the pretrained one at inference (and merge_lora no longer matches layer.eval()); PASSES ALL VISIBLE TESTS: they all run the layer in train mode
# expect: partial
# bug: adapter skipped in eval() mode
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
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        out = self.base_layer(x)
        if self.training:
            out = out + self.scaling * self.lora_B(self.lora_A(x))
        return out
# %% [merge_lora]
def merge_lora(layer):
    # Return an nn.Linear that computes what `layer` computes.
    base = layer.base_layer
    with torch.no_grad():
        base.weight.add_(layer.scaling * (layer.lora_B.weight @ layer.lora_A.weight))
    return base
