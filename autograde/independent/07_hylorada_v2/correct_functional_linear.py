# sample: subclasses v1 but rewrites the forward with F.linear and a single code path: without a prior the factor is the constant 1, with one it is 0.5 + sigmoid(w(P)) from a bias-free, zero-initialised nn.Linear; the prior is validated by a shape comparison that raises ValueError; v1's row_scale() is reused unchanged (row norms of the weight, never per token)
# expect: full
# %% [hylorada_v2_linear]
import torch.nn.functional as F


class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.w = nn.Linear(structure_dim, 1, bias=False)
        nn.init.zeros_(self.w.weight)
        self.w.to(device=self.lora_A.device, dtype=self.lora_A.dtype)

    def forward(self, x, structure_prior=None):
        # x: (B, T, in_features); structure_prior: (B, T, structure_dim) or None (then: v1)
        if structure_prior is None:
            factor = 1.0
        else:
            want = torch.Size([*x.shape[:-1], self.structure_dim])
            if structure_prior.shape != want:
                raise ValueError(f"structure_prior has shape {tuple(structure_prior.shape)}, expected {tuple(want)}")
            factor = 0.5 + torch.sigmoid(self.w(structure_prior))
        delta = self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)
        c = self.row_scale()                                            # (out,), one factor per row
        y = c * (F.linear(x, self.base_layer.weight) + factor * delta)
        return y if self.base_layer.bias is None else y + self.base_layer.bias
