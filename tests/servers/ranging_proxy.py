"""An LDAPS proxy in front of a Samba DC that returns multi-valued attributes in ranges, as Active Directory does.

AD never returns more values of one attribute than its MaxValRange (1,500) in one answer: the attribute comes
back as `memberOf;range=0-1499`, and the client asks again for `memberOf;range=1500-*` (MS-ADTS 3.1.1.3.1.3.3).
Samba answers such explicit requests, but returns every value when none was asked for, and its query policy
cannot lower the limit. This proxy makes the difference: every search result entry that passes through has
each attribute with more than `max_values` values cut to the first `max_values`, named with the range they
cover (`name;range=LOW-HIGH`), also in the answers to the client's own range requests; the last part of a
ranged answer keeps Samba's `;range=LOW-*`. Everything else (bind, controls, paging cookies) passes unchanged.

It speaks TLS with the DC's own certificate and key, so a client verifies it exactly as it verifies the DC.
`ranged` counts the attributes it cut, so that a test can prove the ranges were really used.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path


def _send_all(sock: ssl.SSLSocket, data: bytes) -> None:
    """sendall for a non-blocking SSL socket: a write OpenSSL cannot finish yet is retried, the same bytes."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except ssl.SSLWantReadError:
            select.select([sock], [], [], 1)
        except (ssl.SSLWantWriteError, BlockingIOError):
            select.select([], [sock], [], 1)


SEARCH_RESULT_ENTRY = 0x64  # [APPLICATION 4], constructed
SEQUENCE, SET, OCTET_STRING = 0x30, 0x31, 0x04


class RangingProxy:
    def __init__(self, upstream: str, root: Path, max_values: int, upstream_port: int = 636):
        self.upstream, self.upstream_port, self.max_values = upstream, upstream_port, max_values
        self.ranged = 0
        self._lock = threading.Lock()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(root / "private" / "tls" / "cert.pem", root / "private" / "tls" / "key.pem")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ldaps://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> RangingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:  # stopped
                return
            threading.Thread(target=self._connect, args=(raw,), daemon=True).start()

    def _connect(self, raw: socket.socket) -> None:
        """One client: TLS handshakes on both sides (off the accept loop), then the relay."""
        try:
            client = self._context.wrap_socket(raw, server_side=True)
            upstream_tls = ssl.create_default_context()
            upstream_tls.check_hostname, upstream_tls.verify_mode = False, ssl.CERT_NONE
            server = upstream_tls.wrap_socket(socket.create_connection((self.upstream, self.upstream_port)))
        except OSError:
            raw.close()
            return
        self._sockets += [client, server]
        self._relay(client, server)

    def _relay(self, client: ssl.SSLSocket, server: ssl.SSLSocket) -> None:
        """Both directions in this one thread, the server's answers rewritten. An SSL socket must never be read
        in one thread while another writes it (OpenSSL's connection objects are not thread-safe): a pump per
        direction broke the client's TLS stream now and then ("bad record mac", "unexpected message")."""
        buffer = b""
        try:
            for sock in (client, server):
                sock.setblocking(False)
            while True:
                ready = [s for s in (client, server) if s.pending()] or select.select([client, server], [], [], 1)[0]
                for source in ready:
                    try:
                        chunk = source.recv(65536)
                    except ssl.SSLWantReadError:  # part of a record, or a handshake message (a session ticket)
                        continue
                    if not chunk:
                        return
                    if source is client:
                        _send_all(server, chunk)
                        continue
                    buffer += chunk
                    while (end := _message_end(buffer)) is not None:
                        _send_all(client, self._rewrite(buffer[:end]))
                        buffer = buffer[end:]
        except (OSError, ValueError):  # a side closed (ValueError: closed by stop() meanwhile)
            pass
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()

    # --- the rewrite ----------------------------------------------------------------------------------

    def _rewrite(self, message: bytes) -> bytes:
        """LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] OPTIONAL }; only a
        SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName, attributes } changes."""
        _, start, end = _tlv_at(message, 0)
        _, _, id_end = _tlv_at(message, start)
        op_tag, op_start, op_end = _tlv_at(message, id_end)
        if op_tag != SEARCH_RESULT_ENTRY:
            return message
        _, _, dn_end = _tlv_at(message, op_start)
        _, attrs_start, attrs_end = _tlv_at(message, dn_end)
        attributes = b"".join(self._attribute(a) for a in _children(message, attrs_start, attrs_end))
        op = _tlv(SEARCH_RESULT_ENTRY, message[op_start:dn_end] + _tlv(SEQUENCE, attributes))
        return _tlv(SEQUENCE, message[start:id_end] + op + message[op_end:end])

    def _attribute(self, encoded: bytes) -> bytes:
        _, start, end = _tlv_at(encoded, 0)
        _, name_start, name_end = _tlv_at(encoded, start)
        _, vals_start, vals_end = _tlv_at(encoded, name_end)
        name = encoded[name_start:name_end].decode("utf-8")
        values = list(_children(encoded, vals_start, vals_end))
        if len(values) <= self.max_values:
            return encoded
        base, _, wanted = name.partition(";range=")
        low = int(wanted.split("-")[0]) if wanted else 0
        with self._lock:
            self.ranged += 1
        name = f"{base};range={low}-{low + self.max_values - 1}"
        body = _tlv(OCTET_STRING, name.encode("utf-8")) + _tlv(SET, b"".join(values[: self.max_values]))
        return _tlv(SEQUENCE, body)


def _message_end(data: bytes) -> int | None:
    """The end of the first complete BER element in data, or None while it is incomplete."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        end = 2 + first
    else:
        count = first & 0x7F
        if len(data) < 2 + count:
            return None
        end = 2 + count + int.from_bytes(data[2 : 2 + count], "big")
    return end if len(data) >= end else None


def _tlv_at(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the element at pos (LDAP uses definite lengths only)."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        return tag, pos, pos + first
    count = first & 0x7F
    length = int.from_bytes(data[pos : pos + count], "big")
    return tag, pos + count, pos + count + length


def _children(data: bytes, start: int, end: int):
    """The complete encodings of the elements between start and end."""
    pos = start
    while pos < end:
        _, _, child_end = _tlv_at(data, pos)
        yield data[pos:child_end]
        pos = child_end


def _tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + value
