"""Every fenced `python` block of README.md runs as written, so the README cannot drift
from the code. Each block runs on its own, in a fresh namespace holding only the objects
the README's prose says the reader brings (a classifier and a loader of MNIST-shaped
batches), from a folder where `runs/gat` is a trained run."""

import re
from pathlib import Path

import pytest
import torch

from gatfast import train
from gatfast.train import models

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    text = README.read_text()
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[:m.start()].count("\n") + 1, m.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_its_snippets():
    # the load_run, own-loop, own-generator and backends snippets at least
    assert len(BLOCKS) >= 4


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A folder holding runs/gat: one short gat run on the embedded digits."""
    root = tmp_path_factory.mktemp("readme")
    config = train.TrainConfig(dataset="digits", method="gat", epochs=1, train_size=256, eval_pgd_steps=2,
                               progress=False)
    train.train(config, root / "runs" / "gat", log=lambda *_: None)
    return root


def reader_objects() -> dict:
    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=32)
    return {"classifier": models.SmallCNN(), "loader": loader}


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_snippet_runs(line, code, run_folder, monkeypatch):
    monkeypatch.chdir(run_folder)
    namespace = reader_objects()
    exec(compile(code, f"README.md:{line}", "exec"), namespace)


def _study_tables_tool():
    """tools/readme_study_tables.py, the one place that says what a study's table is."""
    import importlib.util
    path = README.parent / "tools" / "readme_study_tables.py"
    spec = importlib.util.spec_from_file_location("readme_study_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDY_REPORTS = sorted((README.parent / "results").glob("study-*/report.md"))


@pytest.mark.parametrize("report", STUDY_REPORTS, ids=[p.parent.name for p in STUDY_REPORTS])
def test_the_readme_quotes_each_study_as_its_report_stands(report):
    # the README's frontier tables are the committed reports' own, row for row: a cell that
    # lands in a study folder changes its report, and this fails until the README says so
    # too (tools/readme_study_tables.py copies them)
    table = _study_tables_tool().cost_table(report)
    assert table in README.read_text(), (f"README.md does not quote {report.relative_to(README.parent)}'s table: "
                                          "run python tools/readme_study_tables.py")
