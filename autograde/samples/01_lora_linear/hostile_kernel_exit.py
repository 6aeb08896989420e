# sample: hostile; the answer cell kills the kernel process (os._exit), so nothing after it runs
# expect: zero
# status: kernel died
# %% [lora_linear]
import os

os._exit(1)
