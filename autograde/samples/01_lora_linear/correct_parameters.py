# sample: correct; nn.Parameter adapters in nn.Linear orientation, @, merge in place
# expect: full
# %% [lora_linear]
class LoRALinear(nn.Module):
    def __init__(self, base_layer, rank=4, alpha=1):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        for p in self.base_layer.parameters():
            p.requires_grad = False
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    layer.base_layer.weight += layer.scaling * layer.lora_B @ layer.lora_A
    return layer.base_layer
