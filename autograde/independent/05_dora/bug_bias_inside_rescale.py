# sample: computes F.linear(x, V, b) and rescales the result by m / n, i.e. (m/n) ⊙ (Vx + b)
# expect: partial
# bug: bias in the wrong place: the bias is multiplied by m/n together with Vx; DoRA rescales the weight only and adds b after the rescaling (the two agree only while m/n = 1, e.g. at init)
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        return (self.magnitude / n) * F.linear(x, V, self.base_layer.bias)
