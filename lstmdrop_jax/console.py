"""What training prints while it runs: a progress bar on a terminal, a line at most every
``LINE_EVERY_S`` seconds when the output goes to a file, and one line per finished run.

Only text for people; the run folder's ``metrics.jsonl`` is the record.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from tqdm.auto import tqdm

Record = dict[str, Any]

#: Seconds between two progress lines written to a file (not a terminal).
LINE_EVERY_S = 10.0


def scores(latest: Sequence[Record | None], bests: Sequence[Record | None]) -> str:
  """The runs' mean training loss (a language model's lowest training perplexity) and
  their mean best validation accuracy (lowest best validation perplexity)."""
  mean = lambda v: f"{sum(v) / len(v):.3f}"
  lowest = lambda v: f"{min(v):.1f}"
  shown = (
    (latest, "train_loss", "train loss", mean),
    (latest, "train_ppl", "train ppl", lowest),
    (bests, "val/accuracy", "best val acc", mean),
    (bests, "val/ppl", "best val ppl", lowest),
  )
  parts = []
  for records, key, label, summary in shown:
    values = [r[key] for r in records if r and key in r]
    if values:
      parts.append(f"{label} {summary(values)}")
  return ", ".join(parts)


def best_text(best: Record | None) -> str:
  """A best evaluation record as ``epoch E (val acc A)`` or ``epoch E (val ppl P)``."""
  if best is None:
    return "none"
  if "val/accuracy" in best:
    return f"epoch {best['epoch']} (val acc {best['val/accuracy']:.3f})"
  if "val/ppl" in best:
    return f"epoch {best['epoch']} (val ppl {best['val/ppl']:.1f})"
  return f"epoch {best['epoch']} (val loss {best['val/loss']:.4f})"


class Progress:
  """Progress of a group of runs over its run-epochs.

  On a terminal, a tqdm bar with the scores as its postfix. Otherwise a plain
  line for the first epoch, then at most one every ``LINE_EVERY_S`` seconds,
  and one for the last: ``desc: epoch E/N, scores`` (with the run-epochs done
  when the group has several runs).
  """

  def __init__(
    self, desc: str, total: int, initial: int, epochs: int, *, enabled: bool, stream: TextIO
  ):
    self.desc, self.total, self.done, self.epochs = desc, total, initial, epochs
    self.enabled, self.stream = enabled, stream
    self.terminal = enabled and stream.isatty()
    self.last_line = -math.inf
    self.ended: list[str] = []  # lines of runs that ended, written after the next update
    self.bar = None
    if self.terminal:
      self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch", file=stream)

  def update(self, trained: int, epoch: int, text: str) -> None:
    """``trained`` run-epochs more, the latest reaching ``epoch``; ``text``: ``scores``."""
    self.done += trained
    if self.bar is not None:
      self.bar.update(trained)
      self.bar.set_postfix_str(text, refresh=False)
    elif self.enabled and (
      self.ended or self.done >= self.total or time.monotonic() - self.last_line >= LINE_EVERY_S
    ):
      self.last_line = time.monotonic()
      runs = f" ({self.done}/{self.total} run-epochs)" if self.total > self.epochs else ""
      self._write(f"{self.desc}: epoch {epoch}/{self.epochs}{runs}, {text}")
    self._write_ended()

  def run_ended(self, folder: Any, status: str, epoch: int, best: Record | None) -> None:
    """A line for a run that ended (its folder, the best and the final epoch), written
    after the next progress line."""
    if self.enabled:
      self.ended.append(f"{folder}: {status}, final epoch {epoch}, best {best_text(best)}")

  def close(self) -> None:
    self._write_ended()
    if self.bar is not None:
      self.bar.close()

  def _write(self, line: str) -> None:
    if self.bar is not None:
      self.bar.write(line, file=self.stream)
    else:
      print(line, file=self.stream, flush=True)

  def _write_ended(self) -> None:
    for line in self.ended:
      self._write(line)
    self.ended.clear()


def progress(
  desc: str, total: int, initial: int, epochs: int, *, enabled: bool, stream: TextIO | None = None
) -> Progress:
  """A ``Progress`` on ``stream`` (standard error by default)."""
  return Progress(desc, total, initial, epochs, enabled=enabled, stream=stream or sys.stderr)
