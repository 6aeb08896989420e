# sample: initialises B randomly too, so the layer does not start at the pretrained function
# expect: partial
# fails: identity at init
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False)
        self.base_layer.requires_grad_(False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
    return layer.base_layer
