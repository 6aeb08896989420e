# sample: uses the blend parameter directly as the LoRA share β (the seed's table calls 0.1 the "residual weight"), without the sigmoid; the gate does use σ(g)
# expect: partial
# bug: the blend logit is used as a weight: β must be σ(b_res) (0.525 at b_res = 0.1), not b_res itself, so the mixture of the DoRA and LoRA paths is wrong and β can leave [0, 1] while training
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
        beta = self.residual_weight
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        Vx = x @ V.T
        y = (1 - beta) * (m_eff / n) * Vx + beta * Vx
        return y if self.base_layer.bias is None else y + self.base_layer.bias
