# sample: in eval() mode the detached row norm ‖W + sBA‖_row is computed on the first eval call and reused ("it is a constant in backward, and nothing trains in eval"); the direction V x and the magnitude are recomputed at every call, so outputs and gradients match train mode until the parameters change while the layer is in eval mode
# expect: partial
# bug: state cached across calls: after A or B change while the layer stays in eval mode (a checkpoint loaded into an eval()-ed model, weights edited for analysis) the cached norm is stale and the output is no longer m ⊙ Vx/‖V‖_row; the norm must be recomputed at every call
# %% [dora_linear]
class DoRALinear(nn.Module):
    def __init__(self, base_layer, rank=8, alpha=16):
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        in_features = base_layer.in_features
        out_features = base_layer.out_features
        self.base_layer.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.magnitude = nn.Parameter(base_layer.weight.detach().norm(dim=1).clone())
        self._eval_norm = None

    def train(self, mode=True):
        self._eval_norm = None
        return super().train(mode)

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        if self.training:
            n = V.norm(dim=1).detach()
        else:
            if self._eval_norm is None:
                self._eval_norm = V.norm(dim=1).detach()
            n = self._eval_norm
        y = (self.magnitude / n) * (x @ V.T)
        return y if self.base_layer.bias is None else y + self.base_layer.bias
