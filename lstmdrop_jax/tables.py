"""One table writer: Markdown, CSV and LaTeX from a header and rows.

Every table the project writes (the experiment reports, the PTB study, the
benchmark) goes through here, so the three formats always agree. Cells are
printed as given: the caller formats numbers (``"0.933 ± 0.082"``); ``None``
becomes ``n/a``. The CSV side takes its own header and rows, so it can hold
raw numbers (means, stds and interval ends in separate columns) where the
display table holds one formatted cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Rows = Sequence[Sequence[Any]]

_TEX_ESCAPES = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#"}


def cell(value: Any) -> str:
  """A display cell: ``None`` is ``n/a``, anything else ``str``."""
  return "n/a" if value is None else str(value)


def markdown(header: Sequence[str], rows: Rows, caption: str = "") -> str:
  """A GitHub Markdown table (with ``caption`` as a paragraph above it)."""
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return (f"{caption}\n\n" if caption else "") + "\n".join(lines) + "\n"


def _tex(value: Any) -> str:
  text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in cell(value))
  if " ± " in text:  # "m ± s" -> "$m \pm s$"
    return "$" + text.replace(" ± ", " \\pm ") + "$"
  return text


def latex(header: Sequence[str], rows: Rows, caption: str = "") -> str:
  """A ``booktabs`` table: the first two columns left-aligned, the rest centred."""
  align = "".join("l" if i < 2 else "c" for i in range(len(header)))
  lines = [
    "\\begin{table}[t]",
    "\\centering",
    f"\\begin{{tabular}}{{{align}}}",
    "\\toprule",
    " & ".join(_tex(h) for h in header) + " \\\\",
    "\\midrule",
  ]
  lines += [" & ".join(_tex(v) for v in row) + " \\\\" for row in rows]
  lines += ["\\bottomrule", "\\end{tabular}"]
  if caption:
    lines.append(f"\\caption{{{''.join(_TEX_ESCAPES.get(ch, ch) for ch in caption)}}}")
  lines.append("\\end{table}")
  return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Rows) -> str:
  """CSV with ``None`` as an empty field."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\r\n")
  w.writerow(header)
  w.writerows(["" if v is None else v for v in row] for row in rows)
  return buf.getvalue()


def write_tables(
  out_dir: str | Path,
  stem: str,
  header: Sequence[str],
  rows: Rows,
  *,
  caption: str = "",
  csv_header: Sequence[str] | None = None,
  csv_rows: Rows | None = None,
  formats: Sequence[str] = ("md", "csv", "tex"),
) -> dict[str, Path]:
  """Writes ``{stem}.md``, ``{stem}.csv`` and ``{stem}.tex`` under ``out_dir``.

  Args:
    out_dir: created if absent.
    stem: the files' name without suffix.
    header, rows: the display table (Markdown and LaTeX).
    caption: above the Markdown table, ``\\caption`` in LaTeX.
    csv_header, csv_rows: the CSV's own table (default: the display table).
    formats: which of ``md``, ``csv``, ``tex`` to write.

  Returns:
    ``{format: path}`` of the files written.
  """
  unknown = sorted(set(formats) - {"md", "csv", "tex"})
  if unknown:
    raise ValueError(f"unknown table formats {unknown}; valid ones are md, csv, tex")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  text = {
    "md": lambda: markdown(header, rows, caption),
    "csv": lambda: csv_text(csv_header or header, rows if csv_rows is None else csv_rows),
    "tex": lambda: latex(header, rows, caption),
  }
  paths = {}
  for fmt in formats:
    paths[fmt] = out / f"{stem}.{fmt}"
    # newline="" keeps the CSV's \r\n line ends as the csv module writes them.
    with open(paths[fmt], "w", newline="" if fmt == "csv" else None) as f:
      f.write(text[fmt]())
  return paths
