# sample: subclasses v1 with w as an nn.Parameter of shape (structure_dim,) (zeros), a helper position_factor(prior) computed with einsum("...d,d->...", P, w), and a separate _check_prior that compares batch/time dims and structure_dim and raises ValueError; the per-position factor scales the output of v1's update() before v1's own row factor is applied
# expect: full
# %% [hylorada_v2_linear]
class HyLoRADAv2Linear(HyLoRADAv1Linear):
    def __init__(self, base_layer, rank=8, alpha=16, structure_dim=32):
        super().__init__(base_layer, rank, alpha)
        self.structure_dim = structure_dim
        self.structure_w = nn.Parameter(torch.zeros(structure_dim, dtype=self.lora_A.dtype, device=self.lora_A.device))

    def position_factor(self, prior):
        """f = 0.5 + sigmoid(w . P): (..., structure_dim) -> (..., 1)."""
        return 0.5 + torch.sigmoid(torch.einsum("...d,d->...", prior, self.structure_w)).unsqueeze(-1)

    def _check_prior(self, x, prior):
        if prior.dim() != x.dim() or prior.shape[:-1] != x.shape[:-1] or prior.shape[-1] != self.structure_dim:
            raise ValueError(f"structure_prior: expected shape {(*x.shape[:-1], self.structure_dim)}, "
                             f"got {tuple(prior.shape)}")

    def forward(self, x, structure_prior=None):
        # x: (B, T, in_features); structure_prior: (B, T, structure_dim) or None (then: v1)
        if structure_prior is None:
            return super().forward(x)
        self._check_prior(x, structure_prior)
        base_part = torch.einsum("...i,oi->...o", x, self.base_layer.weight)
        y = self.row_scale() * (base_part + self.position_factor(structure_prior) * self.update(x))
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
