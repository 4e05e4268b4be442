"""A real HTTP server on loopback, in a thread: files from a folder, plus misbehaving routes.

/slow/<anything>        answers after `slow_s` seconds (a download that times out)
/to-ftp/<anything>      302 to ftp://… (a redirect to a scheme that must not be followed)
/to/<path>              302 to /<path> on this server (a redirect that may be followed)
/trickle/<anything>     sends a byte at a time, forever (a download cut off by the total limit)
anything else           the file under `root`, or 404
"""

from __future__ import annotations

import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(SimpleHTTPRequestHandler):
    slow_s = 5.0

    def log_message(self, *args) -> None:  # quiet: pytest shows failures, not every request
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/slow/"):
            time.sleep(self.slow_s)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(b"\xff\xd8 too late")
        elif self.path.startswith("/to-ftp/"):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/secret.jpg")
            self.end_headers()
        elif self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to") :])
            self.end_headers()
        elif self.path.startswith("/trickle/"):
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            super().do_GET()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that gave up (a timeout test): expected
        pass


class WebServer:
    def __init__(self, root: Path, slow_s: float = 5.0) -> None:
        handler = type("BoundHandler", (Handler,), {"slow_s": slow_s})
        self.server = QuietServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> WebServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
