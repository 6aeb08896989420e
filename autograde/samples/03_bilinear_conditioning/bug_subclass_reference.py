# sample: borrows lorakit's reference layer instead of implementing it: every test cell has a hidden check, so no credit
# expect: zero
# fails: not reference
# %% [bilinear_lora]
import lorakit


class BilinearLoRALinear(lorakit.BilinearLoRALinear):
    pass
# %% [merge_conditioned]
def merge_conditioned(layer, p):
    return layer.to_linear(p)
