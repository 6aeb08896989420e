# sample: starts both A and B at zero, so no gradient ever reaches either
# expect: partial
# fails: gradients
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.zeros(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T)
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B @ layer.lora_A
    return layer.base_layer
