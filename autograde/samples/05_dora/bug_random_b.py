# sample: B random at init (like A), so W + sBA is not W and the layer does not start as its base
# expect: partial
# fails: identity at init
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.randn(base_layer.out_features, rank) * 0.01)
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        norm = V.norm(dim=1).detach()
        y = (x @ V.T) * (self.magnitude / norm)
        return y if self.base_layer.bias is None else y + self.base_layer.bias
