"""`gatfast bench` runs, measures each variant against the literal step, writes JSON and markdown."""

import json

import pytest
import torch

from gatfast import cli
from gatfast.bench import step as bench
from gatfast.bench import timing


def test_bench_writes_a_table_with_ratios(tmp_path):
    result = bench.run("cpu", cases=[("small_cnn", 8)], warmup=1, iters=2, out_dir=tmp_path, log=lambda *_: None,
                       variants=["literal", "fused-eager", "gatstep"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"literal", "fused-eager", "gatstep"}
    assert rows["literal"]["vs_literal"] == 1.0 and all(r["samples_per_s"] > 0 for r in rows.values())
    saved = json.loads((tmp_path / "step-small_cnn-cpu.json").read_text())  # chosen cases: their own file
    assert saved["rows"] == result["rows"] and saved["torch"] and saved["date"]
    assert "| small_cnn | 8 | gatstep |" in (tmp_path / "step-small_cnn-cpu.md").read_text()


def test_bench_single_pass_pair_runs_and_writes_rows(tmp_path):
    result = bench.run("cpu", cases=[("small_cnn", 8)], warmup=1, iters=1, out_dir=None, log=lambda *_: None,
                       variants=["literal", "image-two-pass", "image-single-pass"])
    assert [r["variant"] for r in result["rows"]] == ["literal", "image-two-pass", "image-single-pass"]
    assert all("error" not in r and r["step_ms"] > 0 for r in result["rows"])


def test_bench_cli_cases_and_variants(tmp_path, capsys):
    assert cli.main(["bench", "--device", "cpu", "--case", "small_cnn:4", "--variants", "literal,gatstep",
                     "--iters", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "step-small_cnn-cpu.json").read_text())
    assert {(r["model"], r["batch"], r["variant"]) for r in saved["rows"]} == {("small_cnn", 4, "literal"),
                                                                             ("small_cnn", 4, "gatstep")}
    assert cli.main(["bench", "--case", "vgg:4"]) == 2
    assert "--case must be MODEL:BATCH with MODEL one of small_cnn, preact_resnet18" in capsys.readouterr().err
    assert cli.main(["bench", "--case", "small_cnn:0"]) == 2
    assert cli.main(["bench", "--variants", "literal,turbo"]) == 2
    assert "--variants: unknown turbo" in capsys.readouterr().err


def test_bench_rejects_bad_arguments(capsys):
    assert cli.main(["bench", "--iters", "0"]) == 2
    assert "--iters must be >= 1" in capsys.readouterr().err


def test_bench_pgd_times_both_attacks_on_a_run(tmp_path):
    pytest.importorskip("torchattacks")
    from gatfast import train
    from gatfast.bench import attacks as bench_pgd
    from gatfast.train import data
    run_dir = tmp_path / "run"
    train.train(train.TrainConfig(dataset="digits", method="standard", epochs=3, batch_size=64, eps=0.1,
                                  eval_pgd_steps=0, progress=False), run_dir, log=lambda *_: None)
    result = bench_pgd.run([run_dir], "cpu", steps=5, rounds=1, out_dir=tmp_path / "out", log=lambda *_: None)
    (row,) = result["rows"]
    assert row["images"] == len(data.load_dataset("digits").test) and row["eps"] == 0.1 and row["steps"] == 5
    assert row["seconds"]["gatfast"] > 0 and row["seconds"]["torchattacks"] > 0
    assert row["speedup"] == row["seconds"]["torchattacks"] / row["seconds"]["gatfast"]
    # the same budget gives the same strength (gatfast keeps each sample's strongest point)
    assert row["accuracy"]["gatfast"] <= row["accuracy"]["torchattacks"] + 0.03 < row["clean"]
    assert json.loads((tmp_path / "out" / "pgd-cpu.json").read_text())["rows"] == result["rows"]
    assert f"| run (standard, digits) | {row['images']} |" in (tmp_path / "out" / "pgd-cpu.md").read_text()


def test_bench_pgd_rejects_bad_arguments(capsys):
    assert cli.main(["bench-pgd", "--steps", "0"]) == 2
    assert "--steps and --rounds must be >= 1" in capsys.readouterr().err


def test_bench_autoattack_runs_each_variant_on_the_same_images(tmp_path, capsys):
    pytest.importorskip("torchattacks")
    from gatfast import train
    run_dir = tmp_path / "run"
    train.train(train.TrainConfig(dataset="digits", method="standard", epochs=3, batch_size=64, eps=0.05,
                                  eval_pgd_steps=0, progress=False), run_dir, log=lambda *_: None)
    assert cli.main(["bench-autoattack", str(run_dir), "--n", "30", "--variants", "torchattacks,gatfast",
                     "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "autoattack-cpu.json").read_text())
    assert saved["images"] == 30 and set(saved["variants"]) == {"torchattacks", "gatfast"}
    v = saved["variants"]
    assert v["gatfast"]["accuracy"] <= saved["clean"] and v["torchattacks"]["accuracy"] <= saved["clean"]
    # 100 steps are never weaker than torchattacks' 10 by more than one image in 30
    assert v["gatfast"]["accuracy"] <= v["torchattacks"]["accuracy"] + 1 / 30 + 1e-9
    assert "| gatfast |" in (tmp_path / "out" / "autoattack-cpu.md").read_text()
    assert cli.main(["bench-autoattack", str(run_dir), "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err


def test_torchattacks_autoattack_at_100_steps_is_built_from_public_classes():
    """The torchattacks-100 variant: torchattacks' own four members, APGD, APGD-T and FAB-T
    at 100 steps, Square at 5,000 queries, in its MultiAttack cascade."""
    torchattacks = pytest.importorskip("torchattacks")
    from gatfast.bench import attacks as bench_pgd
    from gatfast.train import models
    model = models.SmallCNN()
    aa = bench_pgd._torchattacks_autoattack(model, 0.3, "linf", 10, 100)
    assert isinstance(aa, torchattacks.MultiAttack)
    kinds = [type(a).__name__ for a in aa.attacks]
    assert kinds == ["APGD", "APGDT", "FAB", "Square"]
    assert [a.steps for a in aa.attacks[:3]] == [100, 100, 100] and aa.attacks[3].n_queries == 5000
    assert aa.attacks[2].multi_targeted and all(a.eps == 0.3 for a in aa.attacks)
    shipped = bench_pgd._torchattacks_autoattack(model, 0.3, "linf", 10, None)
    assert isinstance(shipped, torchattacks.AutoAttack)


def test_provenance_names_the_gpu(monkeypatch):
    # a GPU result must say which GPU: asked of torch.cuda (stubbed here, the CPU has none)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: asked.append(d) or "NVIDIA H100 80GB HBM3")
    gpu = torch.device("cuda", 0)
    assert timing.device_name(gpu) == "NVIDIA H100 80GB HBM3"
    assert asked == [gpu]
    assert timing.device_name(torch.device("cpu")).startswith("cpu (")
