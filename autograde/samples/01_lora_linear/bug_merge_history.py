# sample: correct layer; merges in place without torch.no_grad, so the weight records autograd history
# expect: partial
# fails: merge
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))
# %% [merge_lora]
def merge_lora(layer):
    delta = layer.lora_B.weight @ layer.lora_A.weight
    layer.base_layer.weight.add_(delta * layer.scaling)
    return layer.base_layer
