# sample: copies the seed's init, magnitude = ones and m_init = a copy of it, instead of the row norms of W; the DoRA path then multiplies row i by 1 / ||W_i|| at step 0, so the layer does not start as the pretrained layer unless every row has norm 1 (the probe layers' rows have norms 0.2 to 1.5); everything else is right
# expect: partial
# bug: magnitude initialised to ones instead of the row norms of W (not identity at init)
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
        row_norms = torch.ones(out_features, **kw)       # the seed's init
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
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        c = (1 - beta) * m_eff / n + beta
        y = c * F.linear(x, V)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
