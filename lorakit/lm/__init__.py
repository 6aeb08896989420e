"""A language-model sandbox that runs on a laptop CPU, nothing downloaded:

    corpus.py    byte-level corpus of CPython 3.11.7 standard-library files (shipped in assets/)
    tinylm.py    TinyLM, a small Llama-style decoder, and its shipped pretrained weights
    pretrain.py  the command that trained those weights
    finetune.py  LoRA fine-tuning of TinyLM: one training loop for the notebooks and experiments
"""
