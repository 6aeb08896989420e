# sample: rescales the whole base output including the bias, (m / n) * F.linear(x, V, b); identical at init (m / n = 1) but the bias gets scaled as soon as m or B move, so the trained layer no longer merges into W' with the unchanged b; caught by the visible test_bias only
# expect: partial
# bug: bias inside the rescaling
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
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        return (self.magnitude / n) * F.linear(x, V, self.base_layer.bias)
