# sample: uses the two scalars directly as the weights (gamma = g, beta = b_res), reading the seed's 'residual_weight 0.1, range [0, 0.5]' as the weight itself; with g = 0 the magnitude m gets no gradient at all (m_eff = m_init) and the blend is 0.1 instead of sigmoid(0.1), and nothing keeps gamma or beta in (0, 1); identity at init still holds
# expect: partial
# bug: gate/blend formula wrong (logits used without the sigmoid)
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
        gamma = self.magnitude_gate                     # a weight in [0, 1]
        beta = self.residual_weight
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        c = (1 - beta) * m_eff / n + beta
        y = c * F.linear(x, V)
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
