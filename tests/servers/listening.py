"""Which process listens on a TCP address, read from /proc (Linux): the test servers that run as separate
programs (slapd, Samba) are only "up" when *their* process holds the listening socket.

A port or address is picked free first and the server binds it later, so another program (a second copy of
the suite, run from another worktree) can take it in between. A plain "does it answer?" would then be fooled
by the other program's server; asking the kernel who owns the listening socket is not.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


class AddressTaken(Exception):
    """Another process holds the address the server was to listen on: start it again on another one."""


def _hex_address(ip: str, port: int) -> str:
    """127.0.0.1:389 as /proc/net/tcp writes it: the IPv4 address in host byte order (little-endian here)."""
    packed = ipaddress.IPv4Address(ip).packed
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def listener_inodes(ip: str, port: int) -> set[str]:
    """The socket inodes listening on exactly ip:port (a wildcard 0.0.0.0 listener is not counted)."""
    wanted = _hex_address(ip, port)
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == LISTEN:
            inodes.add(fields[9])
    return inodes


def owns(pid: int, ip: str, port: int) -> bool | None:
    """True: process `pid` listens on ip:port; False: another process does; None: nobody listens yet."""
    inodes = listener_inodes(ip, port)
    if not inodes:
        return None
    mine = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                mine.add(link[8:-1])
    except FileNotFoundError:  # the process is gone
        return False
    return bool(inodes & mine)
