# sample: blends the magnitudes the other way round, m_eff = γ·m_init + (1 - γ)·m
# expect: partial
# bug: the magnitude gate is reversed: the learned magnitude gets weight 1-σ(g) instead of σ(g), so m_eff is not γ·m + (1-γ)·m_init (with g = 0 the two agree, any other gate value exposes it)
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, in_features)))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        norms = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(norms.clone())
        self.register_buffer("magnitude_init", norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        gamma = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gamma * self.magnitude_init + (1 - gamma) * self.magnitude
        Vx = x @ V.T
        y = (1 - beta) * (m_eff / n) * Vx + beta * Vx
        return y if self.base_layer.bias is None else y + self.base_layer.bias
