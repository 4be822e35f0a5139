"""serve_site(): a built site on loopback, with the headers that make the page cross-origin isolated.

Cross-origin isolation (COOP same-origin + COEP require-corp) is what lets ONNX Runtime Web use WASM threads
(SharedArrayBuffer); without it the page still runs, on one thread. Any static server that sends these two
headers serves the site as well: this one is for trying it out and for the tests.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from toolchain.runtime.errors import ToolchainError

HOST = "127.0.0.1"
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate: a rebuilt site is seen at once (the service worker keeps it offline)
}
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
         ".onnx": "application/octet-stream", ".txt": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8"}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        for key, value in HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002  quiet: the page's requests are not news
        pass


@dataclass
class SiteServer:
    """A running server: its URL, and close() to stop it."""

    url: str
    httpd: ThreadingHTTPServer
    thread: threading.Thread

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def serve_site(site: str | Path, port: int = 0, block: bool = True,
               progress: Callable[[str], None] = lambda msg: None) -> SiteServer:
    """Serve SITE (built by build_site) at http://127.0.0.1:PORT/ (0: a free port). block=False returns the
    running server; call its close() to stop it."""
    from toolchain.web.site import SITE_JSON

    root = Path(site)
    if not (root / SITE_JSON).is_file():
        raise ToolchainError(f"{root} is not a site built by `toolchain web` (no {SITE_JSON}); build it with "
                             f"`toolchain web DIR --out {root}` first.")
    handler = functools.partial(_Handler, directory=str(root.resolve()))
    try:
        httpd = ThreadingHTTPServer((HOST, port), handler)
    except (OSError, OverflowError) as exc:
        raise ToolchainError(f"cannot listen on {HOST}:{port} ({exc}); choose another with --port.") from None
    httpd.daemon_threads = True
    url = f"http://{HOST}:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, name="toolchain-web", daemon=True)
    thread.start()
    server = SiteServer(url, httpd, thread)
    progress(f"serving {root} at {url} (Ctrl-C to stop)")
    if block:  # until Ctrl-C, which is how a server is meant to stop: not an error
        try:
            thread.join()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    return server
