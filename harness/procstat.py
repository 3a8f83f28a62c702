"""What /proc says about processes (Linux): CPU seconds, resident memory and its peak, and who is whose child."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat`` fields utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, …); 0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of the resident set since the process started or :func:`reset_peak_rss`."""
    return status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Reset ``VmHWM`` to the current RSS (needs the right to write the process's ``clear_refs``)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def find_pid(cmdline_part: bytes) -> int | None:
    """The first process whose command line contains ``cmdline_part``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if cmdline_part in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    return None


def children_by_parent() -> dict[int, list[int]]:
    """Each process's children, from the ppid in ``/proc/<pid>/stat`` (empty without /proc)."""
    found: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the ppid follows the parenthesised command name, which may hold spaces and parentheses
        found.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    return children_by_parent().get(pid, [])
