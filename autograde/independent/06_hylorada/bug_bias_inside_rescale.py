# sample: keeps the seed's DoRA_output = (base + delta) * m_eff / norm with base = base_layer(x) (bias included), so the DoRA path rescales the bias and the layer computes (1 - beta) m_eff/n (Vx + b) + beta (Vx + b); identical at init (m_eff / n = 1) and on bias-free layers, wrong as soon as m, the gate or B move on a layer with a bias
# expect: partial
# bug: bias inside the rescaling (bias rescaled with the DoRA path)
# %% [hylorada_linear]
import math


class HyLoRADALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.scaling = alpha / rank
        in_features, out_features = base_layer.in_features, base_layer.out_features
        for q in self.base_layer.parameters():
            q.requires_grad = False
        dd = dict(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.lora_A = nn.Linear(in_features, rank, bias=False, **dd)
        self.lora_B = nn.Linear(rank, out_features, bias=False, **dd)
        nn.init.orthogonal_(self.lora_A.weight)
        nn.init.zeros_(self.lora_B.weight)
        self.m = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())
        self.gate_logit = nn.Parameter(torch.full((1,), 1.0, **dd))
        self.blend_logit = nn.Parameter(torch.full((1,), math.log(0.1 / 0.9), **dd))

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        W = self.base_layer.weight
        b = self.base_layer.bias
        m_init = W.norm(dim=1)                          # W is frozen: a constant
        z = self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))      # base output, bias included
        V = W + self.scaling * self.lora_B.weight @ self.lora_A.weight
        n = V.norm(dim=1).detach()
        gamma = torch.sigmoid(self.gate_logit)
        beta = torch.sigmoid(self.blend_logit)
        m_eff = gamma * self.m + (1 - gamma) * m_init
        dora = z * m_eff / n                            # the seed's (base + delta) * m_eff / norm
        lora = z
        return (1 - beta) * dora + beta * lora
