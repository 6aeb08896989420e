"""lorakit adapters train under DistributedDataParallel (gloo, 2 CPU processes).

After a few SGD steps on halves of one global batch, every rank holds the same parameters, and
they equal single-process training on the whole batch (mean loss: DDP averages the gradients).
The frozen base parameters get no gradient, so DDP leaves them out of its buckets and
``find_unused_parameters=False`` holds. The conditioned layers get their per-sample condition p
through ``lorakit.condition(p)``, split across ranks with x.
"""
import os
import socket
import sys
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lorakit import LoRALinear
from lorakit.conditioning import condition
from lorakit.layers.bilinear import BilinearLoRALinear, RSSBilinearLoRA
from lorakit.tuning import inject_adapters, mark_only_adapters_trainable

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD, STEPS, BATCH, D_IN, D_COND = 2, 4, 8, 6, 3
KINDS = ["lora", "bilinear", "rss"]


def build(kind):
    """A small MLP; adapters on two of its three Linear layers, the rest frozen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 2))
    if kind == "lora":
        inject_adapters(model, LoRALinear, ["0", "2"], rank=3, alpha=6)
    else:
        cls = BilinearLoRALinear if kind == "bilinear" else RSSBilinearLoRA
        inject_adapters(model, cls, ["0", "2"], cond_dim=D_COND, rank=3, alpha=6)
    mark_only_adapters_trainable(model, bias="adapter_only")
    with torch.no_grad():  # B != 0 so every adapter matrix gets a gradient from step 1
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(std=0.3)
    return model


def data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(STEPS, BATCH, D_IN, generator=g), torch.randn(STEPS, BATCH, D_COND, generator=g),
            torch.randn(STEPS, BATCH, 2, generator=g))


def train(model, kind, x, p, y):
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.2)
    for step in range(STEPS):
        opt.zero_grad()
        if kind == "lora":
            out = model(x[step])
        else:
            with condition(p[step]):
                out = model(x[step])
        nn.functional.mse_loss(out, y[step]).backward()
        opt.step()


def _worker(rank, port, outdir):
    """One rank: trains every kind in turn in one process group (DDP's first use imports
    torch._dynamo, seconds of work a process should pay once)."""
    try:
        torch.set_num_threads(1)
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=30))
        x, p, y = data()
        half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        for kind in KINDS:
            model = build(kind)
            ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
            train(ddp, kind, x[:, half], p[:, half], y[:, half])
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                       os.path.join(outdir, f"{kind}-rank{rank}.pt"))
            del ddp                    # its reducer holds the process group
        # both ranks leave together: rank 0 hosts the rendezvous store, and tearing it down
        # while rank 1 still talks to it made gloo call std::terminate on a loaded machine
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        with open(os.path.join(outdir, f"error{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_states(tmp_path_factory):
    """{kind: [state_dict of rank 0, state_dict of rank 1]} after DDP training."""
    if sys.platform == "win32":
        pytest.skip("gloo on 127.0.0.1 is tested on POSIX")
    outdir = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, str(outdir))) for rank in range(WORLD)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=90)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    errors = [f.read_text() for f in sorted(outdir.glob("error*.txt"))]
    assert not errors, "a DDP worker failed:\n" + "\n".join(errors)
    assert [proc.exitcode for proc in procs] == [0] * WORLD, "a DDP worker died or hung"
    return {kind: [torch.load(outdir / f"{kind}-rank{r}.pt") for r in range(WORLD)]
            for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_matches_single_process_training(kind, ddp_states):
    ranks = ddp_states[kind]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks disagree on {key}"

    reference = build(kind)
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    train(reference, kind, *data())
    trainable = {n for n, q in reference.named_parameters() if q.requires_grad}
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6,
                                   msg=f"DDP and single-process training differ on {key}")
        moved = not torch.equal(value, start[key])
        assert moved == (key in trainable), f"{key}: trained={moved}, trainable={key in trainable}"
