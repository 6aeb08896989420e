# sample: hostile; prints 200 MB: the host keeps the first part of the cell's output, adds a note and flags the submission; the notebook stays small
# expect: zero
# flag: output truncated
# %% [lora_linear]
line = "x" * (1 << 20)
for _ in range(200):
    print(line)
