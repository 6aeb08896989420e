# sample: forms V = W + sBA and divides by V.norm(dim=1) without detaching it (the autograd default); forward values are right
# expect: partial
# bug: missing detach: the row norm is differentiated in backward, so the gradients of A and B get the projection term (I - vvᵀ/‖v‖²) that DoRA (paper §4.3, PEFT) drops by treating the norm as a constant; outputs are identical, only gradients differ
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

    def forward(self, x):
        V = self.base_layer.weight + self.scaling * self.lora_B @ self.lora_A
        W_new = (self.magnitude / V.norm(dim=1))[:, None] * V
        y = x @ W_new.T
        return y if self.base_layer.bias is None else y + self.base_layer.bias
