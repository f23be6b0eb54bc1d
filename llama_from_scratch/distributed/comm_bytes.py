"""Counting the bytes a process really sends: the kernel's own count of what it wrote.

gloo moves tensors over TCP sockets with write system calls, and Linux counts every byte a
process passes to them in `/proc/self/io` (`wchar`, summed over the process's threads). The
difference across a block of code is what this rank sent, headers included, measured rather
than predicted; the cost model's formulas are checked against it. Anything else the block
writes (a print, a file) is counted too: measure blocks that only compute and communicate.
NCCL moves GPU memory without system calls, so this count sees nothing of it.
Not handled: platforms without /proc (macOS, Windows): `bytes_written` raises OSError there.

Chapter: scale_out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def bytes_written() -> int:
    """The bytes this process has written so far, by the kernel's count (`wchar`)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError as err:
        raise OSError(f"cannot read /proc/self/io ({err.strerror}): counting sent bytes needs Linux") from None
    raise OSError("/proc/self/io has no wchar line: counting sent bytes needs Linux's I/O accounting")


@dataclass
class Sent:
    """Bytes written inside a `count_sent()` block (set when the block ends)."""

    bytes: int = 0


@contextmanager
def count_sent() -> Iterator[Sent]:
    """`with count_sent() as sent: ...`, then `sent.bytes`: what this process wrote
    meanwhile."""
    sent = Sent()
    start = bytes_written()
    try:
        yield sent
    finally:
        sent.bytes = bytes_written() - start
