# sample: seed names, nn.Parameter factors, m_init a buffer; y = c ⊙ (W x + s B(A x)) + b with c = (1 − β)·m_eff/n + β
# expect: full
# %% [hylorada_linear]
class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.rank = rank
        self.scaling = alpha / rank
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, d_in))
        nn.init.orthogonal_(self.lora_A)
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
        row_norms = base_layer.weight.detach().norm(dim=1)
        self.magnitude = nn.Parameter(row_norms.clone())
        self.register_buffer("magnitude_init", row_norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0))
        self.residual_weight = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        W = self.base_layer.weight
        with torch.no_grad():
            n = (W + self.scaling * self.lora_B @ self.lora_A).norm(dim=1)
        gate = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gate * self.magnitude + (1 - gate) * self.magnitude_init
        c = (1 - beta) * m_eff / n + beta
        z = x @ W.T + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T
        y = c * z
        return y if self.base_layer.bias is None else y + self.base_layer.bias
