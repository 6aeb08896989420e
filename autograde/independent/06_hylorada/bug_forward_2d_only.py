# sample: writes the forward with torch.mm / torch.addmm (tested only on a (batch, in) input), so it is right for 2-D x but raises for (B, T, in) sequences and 4-D inputs, which is how the layer is called inside a language model
# expect: partial
# bug: forward only handles 2-D input
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
        m_eff = gamma * self.magnitude + (1 - gamma) * self.magnitude_init
        c = (1 - beta) * m_eff / n + beta
        if self.base_layer.bias is None:
            return torch.mm(x, V.t()) * c
        return torch.addmm(self.base_layer.bias, x, V.t() * c)     # b + x (c V)^T
