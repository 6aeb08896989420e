# sample: follows the paper's column norm literally on nn.Linear's (out, in) weight: norms over dim 0, keepdim, so it runs
# expect: partial
# fails: frozen, magnitude init, forward, norm detached
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.scaling = alpha / rank
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=0, keepdim=True))

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        norm = V.norm(dim=0, keepdim=True).detach()
        y = x @ (self.magnitude * V / norm).T
        return y if self.base_layer.bias is None else y + self.base_layer.bias
