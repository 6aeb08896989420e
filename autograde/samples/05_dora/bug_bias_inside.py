# sample: rescales base_layer(x) + update, bias included (as the seed's DoRA_output = (base + delta) * m / norm reads)
# expect: partial
# fails: bias
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))

    def forward(self, x):
        with torch.no_grad():
            norm = (self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A).norm(dim=1)
        delta = self.scaling * (x @ self.lora_A.T) @ self.lora_B.T
        return (self.base_layer(x) + delta) * (self.magnitude / norm)
