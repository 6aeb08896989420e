# sample: the seed's formula taken literally: DoRA_output = (base + δ)·m_eff / ‖V + ΔV‖, with base = base_layer(x), bias included
# expect: partial
# fails: bias
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, base_layer.in_features)))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank))
        norms = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(norms.clone())
        self.register_buffer("magnitude_init", norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        base = self.base_layer(x)
        delta = self.scaling * (x @ self.lora_A.T) @ self.lora_B.T
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        norm = V.norm(dim=1).detach()
        gate = torch.sigmoid(self.magnitude_gate)
        m_eff = gate * self.magnitude + (1 - gate) * self.magnitude_init
        dora_output = (base + delta) * m_eff / norm
        lora_output = base + delta
        beta = torch.sigmoid(self.residual_weight)
        return (1 - beta) * dora_output + beta * lora_output
