"""``tables.write_tables``: one table as Markdown, CSV and LaTeX, written exactly."""

import pytest

from lstmdrop_jax import tables

HEADER = ["setting", "rate", "test acc", "n_runs"]
ROWS = [
  ["none", 0.0, "0.933 ± 0.082", 5],
  ["zoneout_c", 0.25, None, 3],
  ["50% & more #1", 0.5, "0.9", 1],
]


def test_markdown_csv_and_latex_hold_the_same_table(tmp_path):
  paths = tables.write_tables(tmp_path / "new" / "dir", "study", HEADER, ROWS, caption="Acc_1")
  assert paths == {f: tmp_path / "new" / "dir" / f"study.{f}" for f in ("md", "csv", "tex")}
  assert paths["md"].read_text() == (
    "Acc_1\n\n"
    "| setting | rate | test acc | n_runs |\n"
    "| --- | --- | --- | --- |\n"
    "| none | 0.0 | 0.933 ± 0.082 | 5 |\n"
    "| zoneout_c | 0.25 | n/a | 3 |\n"
    "| 50% & more #1 | 0.5 | 0.9 | 1 |\n"
  )
  assert paths["csv"].read_bytes().decode() == (
    "setting,rate,test acc,n_runs\r\n"
    "none,0.0,0.933 ± 0.082,5\r\n"
    "zoneout_c,0.25,,3\r\n"
    "50% & more #1,0.5,0.9,1\r\n"
  )
  assert paths["tex"].read_text() == (
    "\\begin{table}[t]\n"
    "\\centering\n"
    "\\begin{tabular}{llcc}\n"
    "\\toprule\n"
    "setting & rate & test acc & n\\_runs \\\\\n"
    "\\midrule\n"
    "none & 0.0 & $0.933 \\pm 0.082$ & 5 \\\\\n"
    "zoneout\\_c & 0.25 & n/a & 3 \\\\\n"
    "50\\% \\& more \\#1 & 0.5 & 0.9 & 1 \\\\\n"
    "\\bottomrule\n"
    "\\end{tabular}\n"
    "\\caption{Acc\\_1}\n"
    "\\end{table}\n"
  )


def test_the_csv_may_hold_its_own_raw_columns_and_formats_are_chosen(tmp_path):
  paths = tables.write_tables(
    tmp_path, "t", HEADER[:2], [["none", "0.9 ± 0.1"]], formats=("csv", "md"),
    csv_header=["setting", "mean", "std"], csv_rows=[["none", 0.9, 0.1]],
  )  # fmt: skip
  assert sorted(paths) == ["csv", "md"] and not (tmp_path / "t.tex").exists()
  assert paths["csv"].read_bytes() == b"setting,mean,std\r\nnone,0.9,0.1\r\n"
  assert paths["md"].read_text() == "| setting | rate |\n| --- | --- |\n| none | 0.9 ± 0.1 |\n"
  with pytest.raises(ValueError, match=r"unknown table formats \['html'\]; valid ones are md"):
    tables.write_tables(tmp_path, "t", HEADER, ROWS, formats=("md", "html"))
