# sample: the seed's Attempt #1: (A @ B) * x, and the seed's merge (which expects nn.Linear adapters)
# expect: partial
# fails: shapes, identity at init, update, scaling, low-rank order, gradients, merge
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
        self.lora_A = nn.Parameter(torch.randn(in_features, self.rank))
        self.lora_B = nn.Parameter(torch.zeros(self.rank, out_features))
        for param in self.base_layer.parameters():
            param.requires_grad = False

    def forward(self, x):
        x = self.base_layer(x) + self.scaling * (self.lora_A @ self.lora_B) * x
        return x
# %% [merge_lora]
@torch.no_grad()
def merge_lora(layer):
    weight_delta = layer.lora_B.weight @ layer.lora_A.weight
    layer.base_layer.weight += weight_delta * layer.scaling
    return layer.base_layer
