"""`structlin.nn` layers under PyTorch's distributed engines (DDP, FSDP2, distributed checkpoint).

Each test starts 2 CPU processes joined by the gloo backend (workers in
`tests/distributed_workers.py`) and compares every step's loss and gradients with a
single-process run on the whole batches, to float32 tolerance; a sharded checkpoint
saved by 2 FSDP2 processes loads into 1 process with identical outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

import distributed_workers as workers  # noqa: E402

STEPS = 4
WORLD = 2
# float32: the split batch sums the same terms in a different order.
TOL = {"rtol": 1e-4, "atol": 1e-6}


def _compare(run: dict, ref: dict) -> None:
    assert run["lrs"] == ref["lrs"]  # the same μP groups as the unwrapped model
    assert len(run["losses"]) == len(ref["losses"]) == STEPS
    for step, (loss, ref_loss) in enumerate(zip(run["losses"], ref["losses"], strict=True)):
        torch.testing.assert_close(loss, ref_loss, **TOL, msg=lambda m, s=step: f"step {s}: {m}")
    for step, (grads, ref_grads) in enumerate(zip(run["grads"], ref["grads"], strict=True)):
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(
                grad, ref_grads[name], **TOL, msg=lambda m, s=step, n=name: f"step {s}, {n}: {m}"
            )


def _load(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def test_ddp_matches_single_process(tmp_path: Path) -> None:
    workers.spawn(workers.ddp_worker, WORLD, str(tmp_path), STEPS)
    ref = workers.reference(STEPS)
    runs = _load(tmp_path)
    for run in runs:
        _compare(run, ref)
    # DDP's gradients are identical on every rank, not just close.
    for a, b in zip(runs[0]["grads"], runs[1]["grads"], strict=True):
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_fsdp2_matches_single_process(tmp_path: Path) -> None:
    workers.spawn(workers.fsdp_worker, WORLD, str(tmp_path), STEPS)
    ref = workers.reference(STEPS)
    for run in _load(tmp_path):
        _compare(run, ref)


def test_sharded_checkpoint_from_2_processes_loads_into_1(tmp_path: Path) -> None:
    workers.spawn(workers.checkpoint_worker, WORLD, str(tmp_path), STEPS)
    expected = torch.load(tmp_path / "outputs.pt")
    model, opt = workers.load_checkpoint(str(tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(model(workers.probe()), expected["saved"])
    # The optimizer state came back too: one more step on the same batch agrees.
    x, y = workers.make_batches(STEPS + 1)[-1]
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(model(workers.probe()), expected["stepped"], **TOL)
