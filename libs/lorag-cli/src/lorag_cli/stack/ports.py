"""Port checks and free-port picking.

Weaviate needs two pairs of consecutive ports (gossip/data, raft/raft-rpc), so tests and `lorag up` pick and
check ports here instead of letting a clash surface as an obscure bind error in some server log.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from lorag_cli.stack.errors import PortInUseError

_MAX_PORT = 65535


def _bind(port: int, kind: int) -> socket.socket:
    """Bind a socket the way Go/grpc servers do (SO_REUSEADDR, all interfaces), so TIME_WAIT is no clash."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(port: int, *, udp: bool = False) -> bool:
    """True if nothing listens on `port` (on any interface); `udp` also checks UDP (memberlist gossip)."""
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        try:
            _bind(port, kind).close()
        except OSError:
            return False
    return True


def check_ports_free(ports: Mapping[str, int], *, hint: str | None = None, udp_roles: tuple[str, ...] = ()) -> None:
    """Raise PortInUseError naming the first taken port of `ports` (role -> port)."""
    for role, port in ports.items():
        if not port_is_free(port, udp=role in udp_roles):
            raise PortInUseError(port, role, hint)


class PortPicker:
    """Picks distinct free ports, holding each bound until `release()` so two picks never collide."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def _hold(self, port: int, *, udp: bool = False) -> bool:
        socks: list[socket.socket] = []
        try:
            socks.append(_bind(port, socket.SOCK_STREAM))
            if udp:
                socks.append(_bind(port, socket.SOCK_DGRAM))
        except OSError:
            for s in socks:
                s.close()
            return False
        self._held.extend(socks)
        return True

    def single(self) -> int:
        """A free TCP port chosen by the kernel."""
        sock = _bind(0, socket.SOCK_STREAM)
        self._held.append(sock)
        port: int = sock.getsockname()[1]
        return port

    def pair(self, *, udp_first: bool = False, attempts: int = 100) -> int:
        """A port p such that p and p+1 are both free (Weaviate derives the second from the first)."""
        for _ in range(attempts):
            probe = _bind(0, socket.SOCK_STREAM)
            port: int = probe.getsockname()[1]
            probe.close()
            if port + 1 > _MAX_PORT:
                continue
            if self._hold(port, udp=udp_first):
                if self._hold(port + 1):
                    return port
                # Drop the first port again: it is the last socket(s) held.
                for _ in range(2 if udp_first else 1):
                    self._held.pop().close()
        raise RuntimeError(f"no two consecutive free ports found in {attempts} attempts")

    def release(self) -> None:
        """Free every held port, just before the server that will use them starts."""
        while self._held:
            self._held.pop().close()

    def __enter__(self) -> PortPicker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
