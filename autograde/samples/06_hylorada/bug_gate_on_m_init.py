# sample: the gate weighs m_init instead of the learned m: m_eff = σ(g)·m_init + (1 − σ(g))·m
# expect: partial
# fails: forward
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
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1).detach()
        gate = torch.sigmoid(self.magnitude_gate)
        m_eff = gate * self.magnitude_init + (1 - gate) * self.magnitude
        beta = torch.sigmoid(self.residual_weight)
        y = (x @ V.T) * ((1 - beta) * m_eff / n + beta)
        return y if self.base_layer.bias is None else y + self.base_layer.bias
