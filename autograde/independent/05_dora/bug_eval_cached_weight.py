# sample: "speeds up inference" by building the merged weight m * V / n on the first eval()-mode forward and reusing it on later eval calls until a train-mode forward clears it, so parameters changed in between without a train-mode call (load_state_dict of a checkpoint, an edit under no_grad, comparing two checkpoints in eval) give stale outputs, and eval outputs carry no gradient; PASSES ALL VISIBLE TESTS: they never change parameters between two eval-mode calls
# expect: partial
# bug: state cached across calls (merged weight cached in eval mode)
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer  # the frozen nn.Linear; weight (out_features, in_features)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1))
        self.base_layer.requires_grad_(False)
        self._eval_weight = None

    def _weight(self):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        n = V.norm(dim=1, keepdim=True).detach()
        return self.magnitude[:, None] * V / n

    def forward(self, x):
        # x: (..., in_features) -> (..., out_features)
        if self.training:
            self._eval_weight = None
            W_new = self._weight()
        else:
            if self._eval_weight is None:
                with torch.no_grad():
                    self._eval_weight = self._weight()
            W_new = self._eval_weight
        return F.linear(x, W_new, self.base_layer.bias)
