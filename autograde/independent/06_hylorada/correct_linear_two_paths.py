# sample: bias-free nn.Linear adapters (lora_A.weight orthogonal, lora_B.weight zeros), m_init not stored but recomputed from the frozen W in every forward, the two logits as shape-(1,) Parameters with other contract-allowed initial values (gate logit 1.0, blend logit log(0.1/0.9) so beta starts at 0.1); forward computes z = Wx + s B(Ax) once and blends the DoRA path m_eff / n * z + b with the LoRA path z + b exactly as written in the table
# expect: full
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
        z = x @ W.T + self.scaling * self.lora_B(self.lora_A(x))
        V = W + self.scaling * self.lora_B.weight @ self.lora_A.weight
        n = V.norm(dim=1).detach()
        gamma = torch.sigmoid(self.gate_logit)
        beta = torch.sigmoid(self.blend_logit)
        m_eff = gamma * self.m + (1 - gamma) * m_init
        dora = m_eff / n * z
        lora = z
        if b is not None:
            dora, lora = dora + b, lora + b
        return (1 - beta) * dora + beta * lora
