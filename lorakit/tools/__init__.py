"""Repository tools, run as commands; nothing in lorakit imports them:

    python -m lorakit.tools.bench           # layer benchmarks against PEFT (see bench.py)
    python -m lorakit.tools.notebook_times  # seconds per solution notebook
"""
