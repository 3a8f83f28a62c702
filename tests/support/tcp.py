"""What the kernel says about a loopback TCP server's connections (Linux ``/proc/net/tcp``): an observable a test can
wait on where asking the server itself would take one of the connection slots being counted."""

from __future__ import annotations

from pathlib import Path

_LISTEN = "0A"


def server_connections(port: int, host: str = "127.0.0.1") -> int:
    """How many connections accepted on ``host:port`` a process still holds open.

    A socket its process has closed stays listed a while (FIN_WAIT, LAST_ACK), but with inode 0: it no longer counts.
    asyncio calls ``connection_lost`` before it closes the socket, so once a server's socket is gone here, the server
    has done with that connection.
    """
    address = "".join(f"{int(part):02X}" for part in reversed(host.split(".")))  # little-endian hex
    local = f"{address}:{port:04X}"
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] != _LISTEN and fields[9] != "0":
            held += 1
    return held
