# sample: right values, but forms the full (out, in) matrix B A in every forward
# expect: partial
# fails: low-rank order
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        delta = self.lora_B @ self.lora_A
        return self.base_layer(x) + self.scaling * (x @ delta.T)
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B @ layer.lora_A
    return layer.base_layer
