"""Training under torchrun: 2 gloo processes on the CPU. The replicas stay identical, and
averaging the shards' gradients gives the single-process update of the whole batch."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import torch

from gatfast import train
from gatfast.train import runs as checkpoint
from gatfast.train import TrainConfig

# Run by each process: train, then gather every rank's live parameters and buffers on
# rank 0, which writes how far the replicas are apart.
WORKER = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from gatfast import train

    def compare(method):
        flat = torch.cat([t.detach().flatten().double() for m in method.modules().values()
                          for t in list(m.parameters()) + list(m.buffers())])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        if dist.get_rank() == 0:
            with open(sys.argv[3], "w") as f:
                json.dump({"max_diff": float((gathered[0] - gathered[1]).abs().max()), "n": flat.numel()}, f)

    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    train.train(train.TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], resume=resume, log=lambda *_: None,
                on_end=compare)
""")

CONFIG = dict(dataset="digits", epochs=2, batch_size=64, eps=0.1, eval_pgd_steps=0, progress=False,
              generator_width=8, attack_steps=2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}"] + args
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _distributed_run(tmp_path, out="ddp", resume=False, **overrides):
    config = {**CONFIG, **overrides}
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    _torchrun([str(worker), json.dumps(config), str(tmp_path / out), str(tmp_path / "replicas.json")]
              + (["resume"] if resume else []))
    return json.loads((tmp_path / "replicas.json").read_text())


def test_gat_replicas_stay_identical(tmp_path):
    replicas = _distributed_run(tmp_path, method="gat", latent_dim=2)
    assert replicas["n"] > 10_000 and replicas["max_diff"] == 0.0
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2


def test_two_processes_train_like_one_on_the_whole_batch(tmp_path):
    """standard training draws no noise: 2 processes with 32 samples each and averaged
    gradients must match 1 process with the global batch of 64."""
    replicas = _distributed_run(tmp_path, method="standard")
    assert replicas["max_diff"] == 0.0
    train.train(TrainConfig(**CONFIG, method="standard"), tmp_path / "single", log=lambda *_: None)
    a = checkpoint.load(tmp_path / "ddp" / train.CHECKPOINT)["modules"]["classifier"]
    b = checkpoint.load(tmp_path / "single" / train.CHECKPOINT)["modules"]["classifier"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)


def test_torchrun_runs_the_command_line(tmp_path):
    _torchrun(["-m", "gatfast", "train", "--dataset", "digits", "--method", "pgd_at", "--epochs", "1",
               "--eps", "0.1", "--attack-steps", "2", "--eval-pgd-steps", "3", "--no-progress",
               "--out", str(tmp_path / "run")])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_done"] == 1 and "pgd3" in summary["robustness"]


def test_resume_under_two_processes_is_exact(tmp_path):
    """GAT draws noise (latent codes, random starts) on each process from its own stream.
    One epoch, a stop, and a resume to two must end with the weights of two epochs in one
    go: each rank must get its own RNG state back, not rank 0's."""
    _distributed_run(tmp_path, out="whole", method="gat", latent_dim=2)
    _distributed_run(tmp_path, out="split", method="gat", latent_dim=2, epochs=1)
    replicas = _distributed_run(tmp_path, out="split", resume=True, method="gat", latent_dim=2)
    assert replicas["max_diff"] == 0.0
    saved = checkpoint.load(tmp_path / "split" / train.CHECKPOINT)
    assert len(saved["rng_ranks"]) == 2 and not torch.equal(saved["rng_ranks"][0]["torch"],
                                                             saved["rng_ranks"][1]["torch"])
    whole = checkpoint.load(tmp_path / "whole" / train.CHECKPOINT)["modules"]
    for name in ("classifier", "generator"):
        for k, v in whole[name].items():
            assert torch.equal(v, saved["modules"][name][k]), f"{name}.{k}"
