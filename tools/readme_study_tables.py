"""Copies each study report's cost table (results/study-*/report.md, '### Robustness per
training cost') into README.md, between the markers `<!-- results/study-NAME table -->`
and `<!-- end of table -->`, so the README quotes the reports as they stand after cells
land (tests/test_readme.py fails until it does).

    python tools/readme_study_tables.py      # from the repository root, after gatfast report
"""

import re
from pathlib import Path

from gatfast.train import runs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TABLE = re.compile(r"^\| method \| seeds \| clean \|.*?(?=^(?!\|))", flags=re.S | re.M)


def cost_table(report: Path) -> str:
    found = TABLE.search(report.read_text())
    if found is None:
        raise SystemExit(f"{report} has no cost table: run gatfast report on its folder")
    return found.group(0)


def main() -> None:
    text = README.read_text()
    for report in sorted((ROOT / "results").glob("study-*/report.md")):
        start = f"<!-- results/{report.parent.name} table -->\n"
        block = re.compile(re.escape(start) + r".*?(?=<!-- end of table -->)", flags=re.S)
        if not block.search(text):
            raise SystemExit(f"README.md has no '{start.strip()}' marker for {report.parent.name}'s table")
        text = block.sub(lambda _: start + cost_table(report), text)
    runs.write_text(README, text)  # never half a README


if __name__ == "__main__":
    main()
