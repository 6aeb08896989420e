"""Probe and judge: the checks run here on mirrors of student objects that live in a probe
process (lorakit.checks.remote, lorakit.checks.probe_server).

Run unsandboxed here (the sandbox has its own tests): what is tested is that the verdicts are
the in-process verdicts, that nothing the probe sends is executed or unpickled, and that a
probe that dies, hangs or lies fails the check it was in and nothing else.
"""
import os
import sys
from pathlib import Path

import pytest
import test_checks_bilinear as bilinear_matrix
import test_checks_dora as dora_matrix
import test_checks_lora as lora_matrix
import torch
from torch import nn

from autograde.submissions import load_sample
from lorakit.checks import CheckFailure, _probe, lora
from lorakit.checks.remote import ProbeSession, Shadow
from lorakit.checks.wire import MAX_HEADER, WireError, decode, read_frame, write_frame

SAMPLES = Path(__file__).resolve().parents[2] / "autograde" / "samples"
SETUP = "import math\nimport torch\nfrom torch import nn\nimport torch.nn.functional as F\n"


@pytest.fixture(autouse=True)
def time_limit(monkeypatch):
    """The grader's own limit: a gradcheck over the wire makes a few hundred calls."""
    monkeypatch.setattr(_probe, "STEP_SECONDS", 10)


def probe(*cells: str) -> ProbeSession:
    session = ProbeSession()
    session.start()
    session.exec(SETUP, "<setup>")
    for i, source in enumerate(cells):
        session.exec(source, f"<answer {i}>")
    return session


def same(local: dict, remote: dict) -> None:
    """Same verdict for every check, and the same message up to autograd node names."""
    assert set(local) == set(remote)
    for name in local:
        assert (local[name] is None) == (remote[name] is None), (name, local[name], remote[name])
        if local[name] is not None:
            assert local[name].replace("Backward0", "Backward")[:120] == remote[name][:120], name


# -- the verdicts are the in-process ones -----------------------------------------------------

@pytest.mark.parametrize("name", ["correct_einsum", "correct_transposed", "bug_alpha_scaling",
                                  "bug_merge_history", "bug_endless_forward", "bug_random_b",
                                  "bug_subclass_reference", "bug_merge_drops_bias"])
def test_lora_verdicts_are_the_in_process_ones(name):
    sample = load_sample(SAMPLES / "01_lora_linear" / f"{name}.py")
    local = lora_matrix.verdicts(*lora_matrix.compile_sample(sample))
    with probe(*sample.cells.values()) as session:
        ns = session.lookup(["LoRALinear", "merge_lora"])
        remote = lora_matrix.verdicts(ns["LoRALinear"], ns.get("merge_lora"))
    same(local, remote)


def test_a_probe_never_imports_torch_dynamo():
    """The checks' dispatch mode is left unwrapped by torch (BigIntermediates declares
    _should_skip_dynamo False): a probe that ran every check of 01 has not imported
    torch._dynamo, a second of CPU per student."""
    sample = load_sample(SAMPLES / "01_lora_linear" / "correct_einsum.py")
    with probe(*sample.cells.values()) as session:
        ns = session.lookup(["LoRALinear", "merge_lora"])
        assert all(v is None for v in lora_matrix.verdicts(ns["LoRALinear"],
                                                           ns.get("merge_lora")).values())
        session.exec("import sys\nDYNAMO = 'torch._dynamo' in sys.modules", "<look>")
        assert session.lookup(["DYNAMO"])["DYNAMO"] is False


@pytest.mark.parametrize("folder,cls", [("03_bilinear_conditioning", "BilinearLoRALinear"),
                                        ("04_rank_space_shift", "RSSBilinearLoRA")])
def test_conditioned_verdicts_are_the_in_process_ones(folder, cls):
    for path in sorted((SAMPLES / folder).glob("*.py"))[:3]:
        sample = load_sample(path)
        local = bilinear_matrix.verdicts(folder, *bilinear_matrix.compile_sample(folder, sample))
        with probe(*sample.cells.values()) as session:
            ns = session.lookup([cls, "merge_conditioned"])
            remote = bilinear_matrix.verdicts(folder, ns[cls], ns.get("merge_conditioned"))
        same(local, remote)


def test_dora_verdicts_are_the_in_process_ones():
    for path in sorted((SAMPLES / "05_dora").glob("*.py"))[:3]:
        sample = load_sample(path)
        ns = {"torch": torch, "nn": nn, "F": torch.nn.functional, "math": __import__("math")}
        exec(compile(sample.cells["dora_linear"], path.name, "exec"), ns)
        with probe(sample.cells["dora_linear"]) as session:
            same(dora_matrix.verdicts(ns["DoRALinear"]),
                 dora_matrix.verdicts(session.lookup(["DoRALinear"])["DoRALinear"]))


# -- what crosses the wire ----------------------------------------------------------------------

def test_autograd_crosses_the_wire_and_gradcheck_sees_the_remote_layer():
    source = ("class Tanh(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))\n"
              "    def forward(self, x):\n        return torch.tanh(x @ self.w.T)\n")
    with probe(source) as session:
        layer = session.lookup(["Tanh"])["Tanh"]()
        assert isinstance(layer, Shadow) and type(layer).__name__ == "Tanh"
        x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: layer(a), (x,))
        layer(x).sum().backward()
        want = (1 - torch.tanh(x.detach() @ layer.w.detach().T) ** 2).T @ x.detach()
        torch.testing.assert_close(layer.w.grad, want)


def test_seeded_construction_and_parameter_edits_are_mirrored():
    source = ("class Lin(nn.Module):\n    def __init__(self, base):\n        super().__init__()\n"
              "        self.base_layer = base\n        self.A = nn.Parameter(torch.randn(2, 5))\n"
              "    def forward(self, x):\n        return self.base_layer(x) + (x @ self.A.T).sum()\n")
    with probe(source) as session:
        Lin = session.lookup(["Lin"])["Lin"]
        base = nn.Linear(5, 3)
        with _probe.seeded(7):
            layer = Lin(base)
        with _probe.seeded(7):
            want = torch.randn(2, 5)
        torch.testing.assert_close(layer.A.detach(), want)   # the probe drew from our RNG
        assert layer.base_layer is base                       # our layer is its own mirror
        with torch.no_grad():
            layer.A.zero_()                                   # an edit here reaches the probe
        x = torch.randn(4, 5)
        torch.testing.assert_close(layer(x), base(x))


def test_a_probe_cannot_send_a_pickle():
    with pytest.raises(WireError):
        decode({"$host": "h1", "pickle": "t0"}, {"t0": torch.zeros(3, dtype=torch.uint8)},
               ProbeSession(["true"])._object)


def test_frames_that_break_the_protocol_are_refused():
    r, w = os.pipe()
    os.write(w, (MAX_HEADER + 1).to_bytes(8, "big"))
    with pytest.raises(WireError, match="limit"):
        read_frame(r)
    os.write(w, (5).to_bytes(8, "big") + b"nope!")
    with pytest.raises(WireError, match="not JSON"):
        read_frame(r)
    write_frame(w, {"v": {"$list": [{"$t": "missing"}]}}, {})
    header, tensors = read_frame(r)
    with pytest.raises(WireError, match="missing"):
        decode(header["v"], tensors, lambda node: None)
    os.close(r)
    os.close(w)


# -- a probe that dies, hangs, lies or patches --------------------------------------------------

BROKEN = {
    "dies": "os._exit(3)",
    "writes garbage on the wire": "garbage()",
    "hangs through its timer": "while True:\n                try:\n                    time.sleep(1)\n"
                               "                except BaseException:\n                    pass",
}


@pytest.mark.parametrize("how", BROKEN)
def test_a_broken_probe_fails_its_check_and_the_next_check_gets_a_fresh_one(how, monkeypatch):
    monkeypatch.setattr(_probe, "STEP_SECONDS", 3)
    source = ("import os, time\n"
              "def garbage():\n"
              "    for fd in os.listdir('/proc/self/fd'):\n"
              "        try:\n            os.write(int(fd), b'\\xff' * 64)\n"
              "        except OSError:\n            pass\n"
              "class LoRALinear(nn.Module):\n"
              "    def __init__(self, base_layer, rank=4, alpha=1):\n"
              "        super().__init__()\n        self.base_layer = base_layer\n"
              "    def forward(self, x):\n        if x.shape[0] == 5:\n"
              f"            {BROKEN[how]}\n"
              "        return self.base_layer(x)\n")
    with probe(source) as session:
        cls = session.lookup(["LoRALinear"])["LoRALinear"]
        with pytest.raises(CheckFailure) as error:
            lora.check_shapes(cls)
        assert "stopped answering" in str(error.value) or "took longer" in str(error.value)
        cls = session.lookup(["LoRALinear"])["LoRALinear"]  # the cells ran again in a new one
        with pytest.raises(CheckFailure, match="must be frozen"):
            lora.check_frozen(cls)
        assert session.restarts == 1


def test_patches_in_the_probe_do_not_reach_the_judge():
    patch = ("import lorakit.checks.lora as L, lorakit.checks._probe as P\n"
             "for m in (L, P):\n    for n in dir(m):\n"
             "        if n.startswith(('check_', 'fail', 'close')):\n"
             "            setattr(m, n, lambda *a, **k: None)\n"
             "torch.allclose = lambda *a, **k: True\n"
             "class LoRALinear(nn.Module):\n"
             "    def __init__(self, base_layer, rank=4, alpha=1):\n"
             "        super().__init__()\n        self.base_layer = base_layer\n"
             "    def forward(self, x):\n        return self.base_layer(x) * 2\n")
    with probe(patch) as session:
        results = lora.report(session.lookup(["LoRALinear"])["LoRALinear"], verbose=False)
    assert results["identity at init"] and results["frozen"], results
    assert "lorakit" in sys.modules and lora.check_shapes.__module__ == "lorakit.checks.lora"
