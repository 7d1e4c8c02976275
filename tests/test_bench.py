"""`gatfast bench` runs, measures each variant against the literal step, writes JSON and markdown."""

import json

from gatfast import bench, cli


def test_bench_writes_a_table_with_ratios(tmp_path):
    result = bench.run("cpu", cases=[("small_cnn", 8)], warmup=1, iters=2, out_dir=tmp_path, log=lambda *_: None,
                       variants=["literal", "fused-eager", "gatstep"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"literal", "fused-eager", "gatstep"}
    assert rows["literal"]["vs_literal"] == 1.0 and all(r["samples_per_s"] > 0 for r in rows.values())
    saved = json.loads((tmp_path / "step-cpu.json").read_text())
    assert saved["rows"] == result["rows"] and saved["torch"] and saved["date"]
    assert "| small_cnn | 8 | gatstep |" in (tmp_path / "step-cpu.md").read_text()


def test_bench_rejects_bad_arguments(capsys):
    assert cli.main(["bench", "--iters", "0"]) == 2
    assert "--iters must be >= 1" in capsys.readouterr().err
