"""Listen on the given TCP ports (run inside a test namespace); print "ready" once every socket listens.

``python -m tests.sensor.listener HOST PORT[=BANNER] ...``: a port with a banner sends it to each
connection at once, as SSH and SMTP servers do; the others accept and say nothing.
"""

from __future__ import annotations

import selectors
import socket
import sys


def main() -> int:
    host = sys.argv[1]
    sel = selectors.DefaultSelector()
    for spec in sys.argv[2:]:
        port, _, banner = spec.partition("=")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(128)
        sel.register(s, selectors.EVENT_READ, banner.encode())
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
            try:
                if key.data:
                    conn.sendall(key.data + b"\r\n")
            except OSError:
                pass
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
