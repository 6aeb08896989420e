# sample: hostile; allocates memory until something gives: the sandbox's memory limit kills its kernel, and only its kernel
# expect: zero
# needs: memory limit
# status: killed: memory
# %% [lora_linear]
blocks = []
while True:
    blocks.append(b"x" * (64 << 20))
