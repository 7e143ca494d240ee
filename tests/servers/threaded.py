"""What the local HTTP test servers share: serving on 127.0.0.1 from a daemon thread, and stopping."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class ThreadedServer:
    """Subclasses build their server in `start()` and hand it to `serve()`; `with Server() as s:` works."""

    _httpd: ThreadingHTTPServer | None = None

    def serve(self, httpd: ThreadingHTTPServer):
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True).start()
        return self

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]
