# sample: borrows lorakit's reference layer instead of implementing it
# expect: zero
# fails: not reference
# %% [lora_linear]
import lorakit


class LoRALinear(lorakit.LoRALinear):
    pass
# %% [merge_lora]
def merge_lora(layer):
    return layer.to_linear()
