# sample: A and B as bias-free nn.Linear modules, magnitude initialised from torch.linalg.vector_norm of the rows; forward never applies V to x: it computes n = ‖W + sBA‖_row under torch.no_grad and returns (m / n) ⊙ (W x + s·B(A x)) + b (PEFT's factored form)
# expect: full
# %% [dora_linear]
import math


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
        w = base_layer.weight
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(rank, out_features, bias=False, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.magnitude = nn.Parameter(torch.linalg.vector_norm(w.detach(), dim=1).clone())

    def row_norm(self):
        with torch.no_grad():
            V = self.base_layer.weight + self.scaling * self.lora_B.weight @ self.lora_A.weight
            return V.norm(dim=1)

    def forward(self, x):
        z = F.linear(x, self.base_layer.weight) + self.scaling * self.lora_B(self.lora_A(x))
        y = (self.magnitude / self.row_norm()) * z
        if self.base_layer.bias is not None:
            y = y + self.base_layer.bias
        return y
