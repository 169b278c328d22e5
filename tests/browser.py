"""Headless Chromium for the documentation tests: Debian's Chromium driven by Playwright.

Playwright's own browser download cannot run on these machines (nothing outside the package
registries is reachable), so the tests drive the Chromium of the Debian package `chromium`
(`make docs-setup` installs it). Without it the tests fail and say how to install it.

Pages may ask for MathJax from its CDN (`MATHJAX_CDN`, the version mkdocs.yml pins): the
tests serve those files from Debian's `libjs-mathjax` instead, and refuse every other request
that leaves localhost, so a page that needs the internet fails the tests.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.9/"
MATHJAX_LOCAL = Path("/usr/share/javascript/mathjax")
INSTALL_HINT = "run `make docs-setup` (as root: apt-get install -y chromium libjs-mathjax)"
LOCAL = re.compile(r"^(https?://(127\.0\.0\.1|localhost)(:\d+)?/|data:|blob:|about:)")


def launch(playwright):
    """Headless Debian Chromium; fails (never skips) with the install command when missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Chromium; {INSTALL_HINT}")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


def require_mathjax() -> None:
    if not (MATHJAX_LOCAL / "MathJax.js").exists():
        pytest.fail(f"{MATHJAX_LOCAL} is missing (Debian's libjs-mathjax); {INSTALL_HINT}")


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install -e '.[dev]'")
    return start()


def block_the_internet(page, refused: list[str]) -> None:
    """Serve MathJax's CDN files from Debian's copy; abort (and record) other outside requests."""

    def handle(route):
        url = route.request.url
        if url.startswith(MATHJAX_CDN):
            local = MATHJAX_LOCAL / url[len(MATHJAX_CDN) :].split("?")[0]
            if local.is_file():
                return route.fulfill(path=str(local))
        refused.append(url)
        return route.abort()

    page.route(lambda url: not LOCAL.match(url), handle)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve `directory` on a free localhost port in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
