# sample: scales BA by alpha / rank in the direction but normalises by ||W + BA||_row (the seed's "Delta V = B @ A"), so the rows of the new weight do not have length m once B is non-zero unless scaling == 1; caught by the visible test_scaling only
# expect: partial
# bug: wrong scaling (missing in the norm)
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.base_layer.requires_grad_(False)
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        W = self.base_layer.weight
        delta = self.lora_B @ self.lora_A
        with torch.no_grad():
            n = (W + delta).norm(dim=1)
        y = F.linear(x, W + self.scaling * delta) * (self.magnitude / n)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
