"""Progress, one mechanism for every long loop kit runs (records, training, prediction, the audit, lr-find, unzip).

On a terminal a tqdm bar redraws itself in place. Written to a log (the stream is not a terminal), the same progress
is whole lines: one after the first unit, then one at most every :data:`LOG_EVERY_S` seconds and one at the end,
never the carriage returns a bar would fill a log with::

    records pets/64: 4,100/10,000 img (41%), 31 s, ~45 s left
    records pets/64: 10,000/10,000 img (100%) in 74 s

Training in a log keeps Keras' one line per epoch (``verbose=2``, :func:`fit_verbosity`) and adds these lines within
a long epoch (:class:`kit.train.callbacks.EpochProgress` uses :class:`LineProgress`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

LOG_EVERY_S = 30.0  # a progress line in a log at most this often (and one at the end)
Item = TypeVar("Item")


def on_terminal(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr, where bars go) is a terminal a bar can redraw in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream: write lines
        return False


def fit_verbosity(requested: int, stream: IO[str] | None = None) -> int:
    """Keras ``fit`` verbosity for ``train.verbose``: its progress bar (1) only on a terminal; in a log one line per
    epoch (2), with :class:`LineProgress` lines inside long epochs."""
    requested = int(requested)
    return 2 if requested == 1 and not on_terminal(sys.stdout if stream is None else stream) else requested


class LineProgress:
    """Progress of ``total`` units (None: unknown) as whole lines on ``stream``: one after the first unit, then at most
    one every ``every_s`` seconds (an update past the interval prints), and a last one from :meth:`close`."""

    def __init__(
        self, desc: str, total: int | None, unit: str = "it", stream: IO[str] | None = None, every_s: float | None = None
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.done = 0
        self.started = self.last = time.monotonic()
        self.closed = False

    def update(self, n: int = 1) -> None:
        first = self.done == 0  # the first line comes at once: a log shows what started, its size and a first ETA
        self.done += n
        now = time.monotonic()
        if first or now - self.last >= self.every_s:
            self.last = now
            self._write(self.line(now - self.started))

    def line(self, elapsed: float, final: bool = False) -> str:
        """``desc: done/total unit (pct), elapsed, ~left`` (``in <elapsed>`` at the end)."""
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        if final:
            return f"{self.desc}: {count} {self.unit}{share} in {elapsed:.0f} s"
        left = ""
        if self.total and self.done:
            left = f", ~{elapsed * (self.total - self.done) / self.done:.0f} s left"
        return f"{self.desc}: {count} {self.unit}{share}, {elapsed:.0f} s{left}"

    @property
    def n(self) -> int:
        """Units done so far (tqdm's name)."""
        return self.done

    def write(self, text: str, file: IO[str] | None = None) -> None:
        """A message line between progress lines (tqdm's ``write``)."""
        print(text, file=file or self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self.line(time.monotonic() - self.started, final=True))

    def _write(self, text: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(text, file=stream, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


class Silent:
    """Progress nobody is shown (``disable=True``)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(
    desc: str, total: int | None, unit: str = "it", *, stream: IO[str] | None = None, disable: bool = False, leave: bool = True
) -> Any:
    """Something with ``update(n)`` and ``close()`` (and a context manager): a tqdm bar on a terminal, else
    :class:`LineProgress`; ``disable``: nothing is shown."""
    if disable:
        return Silent()
    if on_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream or sys.stderr, leave=leave)
    return LineProgress(desc, total, unit, stream)


def progress(
    items: Iterable[Item],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    *,
    stream: IO[str] | None = None,
    disable: bool = False,
    leave: bool = True,
) -> Iterator[Item]:
    """``items``, shown advancing (:func:`progress_bar`); ``total`` defaults to ``len(items)`` where it has one."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:  # no length (a generator), or one unknown until read (a filtered tf.data.Dataset)
            total = None
    bar = progress_bar(desc, total, unit, stream=stream, disable=disable, leave=leave)
    finished = False
    try:
        for item in items:
            yield item
            bar.update(1)
        finished = True
    finally:
        if finished or not isinstance(bar, LineProgress):  # a log's last line says "in N s": only when it is true
            bar.close()
