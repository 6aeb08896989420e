# sample: implements the 'gated magnitude' as m_eff = sigmoid(g) * m, dropping the (1 - gamma) m_init term, so at init m_eff = m / 2 and the DoRA path halves every row: the layer does not start as its base, and m_init (still registered) is never used
# expect: partial
# bug: gate formula wrong (m_eff = gamma m instead of gamma m + (1 - gamma) m_init)
# %% [hylorada_linear]
import torch.nn.functional as F


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        self.base_layer.requires_grad_(False)
        W = base_layer.weight
        kw = dict(dtype=W.dtype, device=W.device)
        self.lora_A = nn.Parameter(nn.init.orthogonal_(torch.empty(rank, in_features, **kw)))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, **kw))
        row_norms = W.detach().norm(dim=1)
        self.magnitude = nn.Parameter(row_norms.clone())
        self.register_buffer("magnitude_init", row_norms.clone())
        self.magnitude_gate = nn.Parameter(torch.tensor(0.0, **kw))
        self.residual_weight = nn.Parameter(torch.tensor(0.1, **kw))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        with torch.no_grad():
            n = V.norm(dim=1)
        gamma = torch.sigmoid(self.magnitude_gate)
        beta = torch.sigmoid(self.residual_weight)
        m_eff = gamma * self.magnitude
        c = (1 - beta) * m_eff / n + beta
        y = c * F.linear(x, V)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
