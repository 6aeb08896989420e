"""TinyLM: a Llama-style causal language model small enough to train and fine-tune on a laptop CPU.

The architecture of Llama/Qwen2 in miniature, with the module names PEFT's ``target_modules``
expect, every projection an ``nn.Linear`` (weight (out, in), no bias)::

    embed_tokens                      (vocab, d_model)
    layers.{i}.input_layernorm        RMSNorm
    layers.{i}.self_attn.q_proj       d_model -> n_heads * head_dim
    layers.{i}.self_attn.k_proj       d_model -> n_kv_heads * head_dim   (grouped-query attention:
    layers.{i}.self_attn.v_proj       d_model -> n_kv_heads * head_dim    k/v smaller than q)
    layers.{i}.self_attn.o_proj       n_heads * head_dim -> d_model
    layers.{i}.post_attention_layernorm RMSNorm
    layers.{i}.mlp.gate_proj          d_model -> d_ff    SwiGLU: down(silu(gate(x)) * up(x))
    layers.{i}.mlp.up_proj            d_model -> d_ff
    layers.{i}.mlp.down_proj          d_ff -> d_model
    norm                              RMSNorm
    lm_head                           d_model -> vocab

Positions are rotary (RoPE, as in Llama). Tokens are bytes (``lorakit.lm.corpus``).
The shipped weights (``lorakit/lm/assets/tinylm.safetensors``, float16, with the card
``tinylm.json``) were produced by ``python -m lorakit.lm.pretrain``; ``load_pretrained()`` reads
them — nothing is downloaded.

Qwen2.5-0.5B for scale: d_model 896, 14 query heads and 2 key/value heads of size 64, so its
k_proj/v_proj map 896 -> 128. TinyLM: d_model 128, 4 query heads and 2 key/value heads of size
32, so k_proj/v_proj map 128 -> 64.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS = ASSETS / "tinylm.safetensors"
CARD = ASSETS / "tinylm.json"


@dataclass
class TinyLMConfig:
    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 320
    context: int = 256          # longest sequence the rotary tables cover
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")


class RMSNorm(nn.Module):
    """x / rms(x) * weight, with rms over the last dimension (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.to(x.dtype) * self.weight


def rotary_tables(context: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (context, head_dim), in the 'rotate half' layout of Llama/Qwen."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)                                 # (T, head_dim)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i + d/2}) of x (B, H, T, d) by position-dependent angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Causal multi-head attention with grouped key/value heads and rotary positions."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)     # (B, H, T, d)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # each key/value head serves `groups` query heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                    # (B, H, T, d)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLM(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: TinyLMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or TinyLMConfig()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg.context, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02), residual-branch outputs scaled by 1/sqrt(2 n_layers)."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            else:
                std = 0.02
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    std /= math.sqrt(2 * self.config.n_layers)
                p.normal_(0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.ndim != 2:
            raise ValueError(f"expected token ids of shape (batch, time), got {tuple(idx.shape)}")
        T = idx.shape[1]
        if T > self.config.context:
            raise ValueError(f"sequence length {T} exceeds the model's context {self.config.context}")
        x = self.embed_tokens(idx)                                   # (B, T, d_model)
        dtype = x.dtype
        cos, sin = self.rope_cos[:T].to(dtype), self.rope_sin[:T].to(dtype)
        for block in self.layers:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))                            # (B, T, vocab)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- loss, perplexity, sampling ---------------------------------------------------------------

def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per byte)."""
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


@torch.no_grad()
def evaluate(model: nn.Module, tokens: torch.Tensor, context: int = 128, batch_size: int = 32,
             max_windows: int | None = None) -> dict:
    """Loss (nats/byte) and perplexity over consecutive windows of ``tokens``, in eval mode."""
    from .corpus import eval_batches

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in eval_batches(tokens, context, batch_size, max_windows, device=device):
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}


def perplexity(model: nn.Module, tokens: torch.Tensor, context: int = 128, batch_size: int = 32,
               max_windows: int | None = None) -> float:
    """exp(mean next-byte cross-entropy) over consecutive windows; 256 = uniform guessing."""
    return evaluate(model, tokens, context, batch_size, max_windows)["perplexity"]


@torch.no_grad()
def generate(model: nn.Module, prompt: str, max_new_tokens: int = 80, temperature: float = 0.8,
             seed: int = 0) -> str:
    """Sample a continuation of ``prompt`` byte by byte (seeded, so it is reproducible)."""
    from .corpus import decode, encode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = encode(prompt)[None].to(device)
    context = model.config.context if hasattr(model, "config") else 128
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context:])[0, -1].float().cpu()
        if temperature <= 0:
            nxt = logits.argmax()[None]
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
        idx = torch.cat([idx, nxt[None].to(device)], dim=1)
    model.train(was_training)
    return decode(idx[0, len(encode(prompt)):])


# --- the shipped weights ----------------------------------------------------------------------

def read_card(path: str | Path = CARD) -> dict:
    """The model card written by ``python -m lorakit.lm.pretrain``: config, data, losses, machine."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_pretrained(device=None, dtype: torch.dtype = torch.float32,
                    weights: str | Path = WEIGHTS, card: str | Path = CARD) -> TinyLM:
    """The shipped pretrained TinyLM (read from ``lorakit/lm/assets``; nothing is downloaded).

    Returned in eval mode with every parameter trainable, like a freshly loaded HF model.
    """
    from safetensors.torch import load_file

    weights, card = Path(weights), Path(card)
    if not weights.exists():
        raise FileNotFoundError(
            f"{weights} is missing. It ships with lorakit; rebuild it with `python -m lorakit.lm.pretrain`.")
    cfg = TinyLMConfig(**read_card(card)["config"])
    model = TinyLM(cfg)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{weights} does not match TinyLM: missing {missing}, unexpected {unexpected}")
    return model.to(device=device, dtype=dtype).eval()


def config_dict(cfg: TinyLMConfig) -> dict:
    return asdict(cfg)
