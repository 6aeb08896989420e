# sample: computes the row norm n = ‖W + sBA‖_row on the first forward call and stores it in an attribute for all later calls ("the norm is a constant anyway")
# expect: partial
# bug: state cached across calls: "treat the norm as a constant" means detach it in backward, not freeze its value; once B moves (after an optimiser step) the cached n is stale, so the layer no longer computes (1-β)·m_eff/‖W + sBA‖ ⊙ Vx + βVx + b
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
        self._norm = None

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        if self._norm is None:
            self._norm = V.norm(dim=1).detach()
        n = self._norm
        gamma = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        Vx = x @ V.T
        y = (1 - beta) * (m_eff / n) * Vx + beta * Vx
        return y if self.base_layer.bias is None else y + self.base_layer.bias
