"""The documents' tables against the files they come from.

A table in README.md or docs/ that follows a line ``<!-- from results/STUDY/FILE -->`` (a
path under docs/) shows numbers of that published file: each number in its body, rounded
as the page prints it, is one of the file's numbers. Ratios (``1.21x`` and the like) are
derived, and not checked. A regenerated file whose numbers moved, or a page edited by
hand, fails here.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
MARK = re.compile(r"^<!-- from (\S+) -->$")
TIMES = "\u00d7"
#: A number as pages and files write it; a ratio (followed by the times sign or x) is left out.
NUMBER = re.compile(rf"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w.]|{TIMES}|x\b)")


def marked_tables(text: str) -> list[tuple[str, list[str]]]:
  """Each marker's source path and the lines of the table that follows it (header, rule,
  body)."""
  lines, out = text.splitlines(), []
  for k, line in enumerate(lines):
    m = MARK.match(line.strip())
    if not m:
      continue
    rest = [ln for ln in lines[k + 1 :]]
    while rest and not rest[0].strip():
      rest.pop(0)
    table = []
    for ln in rest:
      if not ln.startswith("|"):
        break
      table.append(ln)
    out.append((m.group(1), table))
  return out


def numbers(text: str) -> list[tuple[float, int]]:
  """Every number in ``text`` with its count of decimals."""
  found = []
  for token in NUMBER.findall(text):
    digits = token.replace(",", "")
    found.append((float(digits), len(digits.partition(".")[2])))
  return found


def unmatched(rows: list[str], source: str) -> list[str]:
  """The numbers of ``rows`` that no number of ``source`` rounds to."""
  have = [value for value, _ in numbers(source)]
  missing = []
  for value, decimals in numbers("\n".join(rows)):
    if not any(abs(round(v, decimals) - value) < 1e-9 for v in have):
      missing.append(f"{value:.{decimals}f}")
  return missing


CASES = [
  pytest.param(page, path, table, id=f"{page.name}:{path}")
  for page in PAGES
  for path, table in marked_tables(page.read_text())
]


def test_the_pages_mark_their_published_tables():
  marked = {page.name for page, *_ in (c.values for c in CASES)}
  assert {"benchmark.md", "PERFORMANCE.md", "ptb.md"} <= marked


@pytest.mark.parametrize(("page", "path", "table"), CASES)
def test_a_marked_table_shows_its_files_numbers(page, path, table):
  source = DOCS / path
  assert source.is_file(), f"{page.name}: {path} is not a file under docs/"
  rows = table[2:]  # after the header and its rule
  assert rows, f"{page.name}: no table follows the marker for {path}"
  assert unmatched(rows, source.read_text()) == [], f"{page.name}: {path}"
  assert not altered_copy(table, source.read_text()), f"{page.name}: {path} is not verbatim"


def altered_copy(table: list[str], source: str) -> bool:
  """Whether ``table`` has the header of a table in ``source`` (so it is that table,
  shown as it is) but not its rows, line for line."""
  lines = source.splitlines()
  if table[0] not in lines:
    return False  # a table laid out anew: its numbers are checked
  start = lines.index(table[0])
  return table != lines[start : start + len(table)]


def test_a_copied_table_must_be_verbatim():
  source = "| a | b |\n| --- | --- |\n| x | 1.0 |\n| y | 2.0 |\n"
  lines = source.splitlines()
  swapped = [lines[0], lines[1], "| x | 2.0 |", "| y | 1.0 |"]
  assert unmatched(swapped[2:], source) == []  # every number is in the file
  assert altered_copy(swapped, source) and not altered_copy(lines, source)
  assert not altered_copy(["| b | a |", *swapped[1:]], source)  # laid out anew
  verbatim = {p.name for p, path, table in (c.values for c in CASES)
              if table[0] in (DOCS / path).read_text().splitlines()}  # fmt: skip
  assert {"overfit.md", "ptb.md", "variants.md"} <= verbatim


def test_a_number_the_file_lacks_is_caught():
  rows = [f"| seed_clf | 44.3 ms (rounds 36.0\u201353.1) | 1.41{TIMES} |"]
  source = '{"ms": 44.271, "ms_rounds": [44.3, 36.01, 53.1]}'
  assert unmatched(rows, source) == []
  assert unmatched([f"| seed_clf | 44.5 ms | 1.41{TIMES} |"], source) == ["44.5"]


def lead(text: str) -> str:
  """A page's top: its text before the first second-level heading."""
  return text.split("\n## ", 1)[0]


SHOWN = sorted({(page, path.split("/")[1]) for page, path, _ in (c.values for c in CASES)})


@pytest.mark.parametrize(("page", "study"), SHOWN, ids=[f"{p.name}:{s}" for p, s in SHOWN])
def test_a_page_names_at_its_top_the_commit_of_each_study_it_shows(page, study):
  manifest = json.loads((DOCS / "results" / study / "manifest.json").read_text())
  assert manifest["commit"] in lead(page.read_text()), (
    f"{page.name}: its top does not name {study}'s commit {manifest['commit']}"
  )


#: An absolute path of two or more folders, as a log prints a run folder.
ABSOLUTE = re.compile(r"(?:^|[\s'\"(=`])/(?:[\w.-]+/){2,}", re.M)


def published_texts() -> list[Path]:
  texts = (".txt", ".md", ".csv", ".json")
  return [p for p in sorted((DOCS / "results").rglob("*")) if p.suffix in texts]


def test_published_files_name_no_path_of_the_machine_that_ran_them():
  assert published_texts()
  for path in published_texts():
    hits = [m.group(0).strip() for m in ABSOLUTE.finditer(path.read_text())]
    assert not hits, f"{path.relative_to(ROOT)}: {hits[:3]}"


def test_an_absolute_path_is_caught():
  assert ABSOLUTE.search("/home/someone/results/reproduce/x/runs/a: finished")
  assert ABSOLUTE.search("see '/srv/lab/repo/results/x'")
  assert not ABSOLUTE.search("{out}/runs/a: finished; 50.2 ms/step; 1/13 epochs")
