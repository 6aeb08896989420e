# sample: seed 003 as written: the magnitude (and its frozen copy m_init) start at ones
# expect: partial
# fails: identity at init, forward
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.zeros(rank, base_layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        self.magnitude = nn.Parameter(torch.ones(base_layer.out_features))
        self.register_buffer("magnitude_init", torch.ones(base_layer.out_features))
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))
        nn.init.orthogonal_(self.lora_A)
        nn.init.zeros_(self.lora_B)

    def forward(self, x):
        W = self.base_layer.weight
        V = W + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        gate = torch.sigmoid(self.magnitude_gate)
        m_eff = self.magnitude * gate + self.magnitude_init * (1 - gate)
        z = x @ V.T
        dora = z * (m_eff / n)
        beta = torch.sigmoid(self.residual_weight)
        y = (1 - beta) * dora + beta * z
        return y if self.base_layer.bias is None else y + self.base_layer.bias
