"""A real browser for the tests: headless Chromium driven by chromedriver over the W3C WebDriver protocol (JSON over
HTTP on loopback), and the pages it loads, served from origins of their own.

Only what the tests need, a dozen lines of protocol, instead of a client library: :class:`Browser` starts
``chromedriver`` on a free loopback port, opens one session (``--headless=new``), navigates, and runs an async script
in the page (``POST /session/{id}/execute/async``), whose result comes back as JSON. :class:`PageServer` serves one
small HTML page from ``http://127.0.0.1:<port>`` — each server is an origin of its own (a different port is a different
origin). :func:`browser_binaries` finds Debian's ``chromium`` and ``chromedriver``; without them a test is skipped with
the reason, and under ``CI=true`` it fails (``.ci/run`` installs them).

Example::

    with PageServer(PAGE) as page, Browser(*browser_binaries()) as browser:
        browser.open(page.url)
        browser.run("return await fetch(args[0]).then(r => r.status)", "http://127.0.0.1:8080/x")
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from harness.net import free_port, wait_port

#: Where Debian puts them (``apt-get install chromium chromium-driver``).
CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver")


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver); skips the test when either is missing, fails it under ``CI=true``."""
    found = []
    for names in (CHROMIUM, CHROMEDRIVER):
        path = next((p for p in (shutil.which(names[0]), names[1]) if p and os.access(p, os.X_OK)), None)
        if path is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true and {names[0]} is not installed (apt-get install chromium chromium-driver; "
                            ".ci/run does)")
            pytest.skip(f"{names[0]} is not installed (apt-get install chromium chromium-driver)")
        found.append(path)
    return found[0], found[1]


#: urllib without the environment's proxies (``http_proxy``): chromedriver is on loopback
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriverError(AssertionError):
    """chromedriver refused a command (its error and message)."""


class Browser:
    """One headless Chromium session through chromedriver (``args``: more Chromium switches). :meth:`run` evaluates
    ``body`` as an async function of its arguments in the current page and returns its result (JSON values only)."""

    def __init__(self, chromium: str, chromedriver: str, args: list[str] | None = None, timeout: float = 30.0) -> None:
        self.chromium, self.chromedriver, self.timeout = chromium, chromedriver, timeout
        self.args = args or []
        self.port = free_port()
        self.profile = tempfile.TemporaryDirectory(prefix="httppush-chromium-")
        self.log = open(os.path.join(self.profile.name, "chromedriver.log"), "w+b")  # closed in close()
        self.process: subprocess.Popen[bytes] | None = None
        self.session = ""

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.process = subprocess.Popen([self.chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, 15.0)
        options = {"binary": self.chromium,
                   # --no-sandbox: CI runs as root; --disable-dev-shm-usage: containers often have a small /dev/shm
                   "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                            "--no-first-run", "--disable-extensions", f"--user-data-dir={self.profile.name}/profile",
                            *self.args]}
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options, "timeouts": {"script": int(self.timeout * 1000)}}}})
        self.session = value["sessionId"]

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, body: str, *args: Any) -> Any:
        """``body`` (JavaScript, may ``await``; its arguments are ``args``) run in the page; its return value."""
        script = ("const done = arguments[arguments.length - 1];"
                  f"(async (args) => {{ {body} }})(Array.from(arguments).slice(0, -1))"
                  ".then(done, (e) => done({thrown: String(e)}));")
        result = self._call("POST", f"/session/{self.session}/execute/async", {"script": script, "args": list(args)})
        if isinstance(result, dict) and "thrown" in result:
            raise WebDriverError(f"the page's script threw {result['thrown']}")
        return result

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", f"/session/{self.session}")
            except (OSError, WebDriverError):
                pass
            self.session = ""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.log.close()
        self.profile.cleanup()

    def driver_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _DIRECT.open(request, timeout=self.timeout + 30) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as exc:
            try:
                value = json.load(exc)["value"]
            except ValueError:
                value = {"error": str(exc.code), "message": ""}
            raise WebDriverError(f"chromedriver: {method} {path}: {value.get('error')}: "
                                 f"{str(value.get('message'))[:1500]}\n{self.driver_log()}") from None


class PageServer:
    """``page`` (HTML) served at ``http://127.0.0.1:<port>/`` until closed: an origin of its own. ``/favicon.ico``
    is 404 (a browser asks for it)."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path.split("?")[0] == "/"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"page-{self.port}", daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

