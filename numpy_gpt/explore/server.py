"""The explore page's server: the standard library's HTTP server, a small JSON API, the page's files.

``make_server(explorer, host="127.0.0.1", port=0)`` returns a ``ThreadingHTTPServer`` (port 0: a
free one, see ``.url``); ``serve_forever()`` answers until ``shutdown()`` or Ctrl-C. It serves

    GET  /                  the page (static/index.html); GET /static/NAME its scripts and styles
    GET  /api/info          the model: kind, name, sizes                    Explorer.info
    POST /api/tokens        {"text"}                                        Explorer.tokens
    POST /api/generate      {"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"}
                            -> one JSON line per event, streamed as it is computed (NDJSON over a
                            chunked response): {"event": "prompt", ...}, {"event": "step", ...} per
                            token, then {"event": "done", "text"} (or {"event": "error", "error"})
    POST /api/attention     {"ids", "layer", "head"}                        Explorer.attention
    POST /api/lens          {"ids", "positions"?}                           Explorer.logit_lens
    POST /api/classify      {"text"}                                        Explorer.classify
    POST /api/fill-mask     {"text"}                                        Explorer.fill_mask

Bad input (malformed JSON, a value of the wrong kind, a layer that does not exist, ...) is answered
with status 400 and {"error": one line}; the server goes on serving. The numbers in a request are
read with the command line's argument types (cli/common.py), so the page and the command line refuse
the same values with the same words.

Only the package's own files are served: the names in static/ are read once at start, and a request
is answered from that table, never by opening a path built from the URL (so ``/static/../x`` is a 404,
whatever its spelling). The server listens on 127.0.0.1 unless told otherwise; there, it also refuses
a request whose Host header is not a loopback name (a web page elsewhere cannot reach it by
rebinding a DNS name to 127.0.0.1). The page loads nothing from the network (no CDN, no remote font;
its Content-Security-Policy allows only this server).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from numpy_gpt.cli.common import (
    non_negative_float,
    non_negative_int,
    positive_int,
    random_seed,
    top_p_mass,
)
from numpy_gpt.explore.explorer import Explorer

MAX_BODY = 1 << 20                 # bytes of a request body: a context of token ids is far less
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'"


def static_files() -> dict[str, bytes]:
    """{name: bytes} of every file in the package's static/ folder, read once."""
    folder = resources.files("numpy_gpt.explore") / "static"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


class BadRequest(Exception):
    """A request the API cannot read (its status and one line)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def parameter(body: dict[str, Any], name: str, kind: Callable[[str], Any], default: Any = None, *,
              required: bool = False) -> Any:
    """``body[name]`` read as the command line reads a flag's text with the argument type ``kind``
    (cli/common.py); ``default`` when it is absent, null or "" (unless ``required``). A value argparse
    would refuse is a BadRequest naming the field."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"{name}: expected a number, got {json.dumps(value)[:40]}")
    try:
        return kind(str(value))
    except argparse.ArgumentTypeError as err:
        raise BadRequest(f"{name}: {err}") from None


def text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text, got {json.dumps(value)[:40]}")
    return value


def host_name(header: str) -> str:
    """The host of a Host header without its port: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:80" -> "[::1]"."""
    if header.startswith("["):
        return header[:header.find("]") + 1]
    return header.rsplit(":", 1)[0]


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> ExploreServer:
    """A server for ``explorer`` on ``host``:``port`` (0: a free port), not started."""
    return ExploreServer((host, port), explorer)


class ExploreServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the explorer, the page's files and the Host names it answers."""

    daemon_threads = True              # a stream still open does not keep Ctrl-C from ending the process

    def __init__(self, address: tuple[str, int], explorer: Explorer):
        super().__init__(address, ExploreHandler)
        self.explorer = explorer
        self.files = static_files()
        self.loopback_only = address[0] in ("127.0.0.1", "localhost", "::1")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


class ExploreHandler(BaseHTTPRequestHandler):
    """One request: a file of the page, or a call of the API (module docstring)."""

    server: ExploreServer
    protocol_version = "HTTP/1.1"      # keep-alive, and chunked responses for the generation stream
    server_version = "numpy-gpt-explore"

    # -- routing ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route: Callable[[str], None]) -> None:
        try:
            self._check_host()
            route(urlsplit(self.path).path)
        except BadRequest as err:
            self._send_json({"error": str(err)}, err.status)
        except ValueError as err:                        # ExploreError and the library's own checks
            self._send_json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True                 # the page went away
        except Exception as err:                         # a bug: say so, log it, keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_json({"error": f"internal error: {type(err).__name__}: {err}"},
                            HTTPStatus.INTERNAL_SERVER_ERROR)

    def _check_host(self) -> None:
        host = host_name(self.headers.get("Host", ""))
        if self.server.loopback_only and host not in LOOPBACK_NAMES:
            self.close_connection = True
            raise BadRequest(f"this server answers requests for 127.0.0.1 only, not for {host!r}",
                             HTTPStatus.FORBIDDEN)

    def _get(self, path: str) -> None:
        if path in ("/", "/index.html"):
            return self._send_file("index.html")
        if path == "/api/info":
            return self._send_json(self.server.explorer.info())
        if path.startswith("/static/"):
            return self._send_file(path[len("/static/"):])
        if path.startswith("/api/"):
            raise BadRequest(f"{path} takes a POST with a JSON body", HTTPStatus.METHOD_NOT_ALLOWED)
        raise BadRequest(f"no page at {path}", HTTPStatus.NOT_FOUND)

    def _post(self, path: str) -> None:
        body = self._body()                              # read whole first: the connection stays in step
        explorer = self.server.explorer
        routes: dict[str, Callable[[dict], Any]] = {
            "/api/tokens": lambda b: explorer.tokens(text_field(b, "text")),
            "/api/attention": lambda b: explorer.attention(
                b.get("ids"), parameter(b, "layer", non_negative_int, required=True),
                parameter(b, "head", non_negative_int, required=True)),
            "/api/lens": lambda b: explorer.logit_lens(b.get("ids"), b.get("positions")),
            "/api/classify": lambda b: explorer.classify(text_field(b, "text")),
            "/api/fill-mask": lambda b: explorer.fill_mask(text_field(b, "text")),
        }
        if path == "/api/generate":
            return self._generate(body)
        if path not in routes:
            raise BadRequest(f"no API at {path}", HTTPStatus.NOT_FOUND)
        self._send_json(routes[path](body))

    # -- requests and answers ----------------------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        """The request's JSON object, or a BadRequest saying what is wrong with it."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise BadRequest("a POST needs a Content-Length", HTTPStatus.LENGTH_REQUIRED)
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise BadRequest(f"the request is {int(length):,} bytes, more than {MAX_BODY:,}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadRequest(f"the request is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object, e.g. {\"text\": \"...\"}")
        return body

    def _generate(self, body: dict[str, Any]) -> None:
        explorer = self.server.explorer
        prompt_view, steps = explorer.generate(
            text_field(body, "prompt"), parameter(body, "max_new_tokens", positive_int, 20),
            parameter(body, "temperature", non_negative_float, 0.0), parameter(body, "top_k", positive_int),
            parameter(body, "top_p", top_p_mass), parameter(body, "seed", random_seed))
        # Everything was checked: from here on the answer is a 200 stream, one JSON line per event.
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self._send_chunks(self._events(prompt_view, steps))
        finally:
            steps.close()

    def _events(self, prompt_view: dict[str, Any], steps) -> Iterable[dict[str, Any]]:
        yield {"event": "prompt", **prompt_view}
        ids = [token["id"] for token in prompt_view["tokens"]]
        try:
            for step in steps:
                ids.append(step["id"])
                yield {"event": "step", **step}
        except ValueError as err:                        # the status is sent: an error is an event
            yield {"event": "error", "error": str(err)}
            return
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            yield {"event": "error", "error": f"internal error: {type(err).__name__}: {err}"}
            return
        yield {"event": "done", "text": self.server.explorer.decode(ids)}

    def _send_chunks(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            data = (json.dumps(event) + "\n").encode("utf-8")
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def _send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(value).encode("utf-8"), "application/json; charset=utf-8", status)

    def _send_file(self, name: str) -> None:
        data = self.server.files.get(name)
        if data is None:
            raise BadRequest(f"no file {name!r}", HTTPStatus.NOT_FOUND)
        suffix = name[name.rfind("."):] if "." in name else ""
        self._send(data, CONTENT_TYPES.get(suffix, "application/octet-stream"), HTTPStatus.OK)

    def _send(self, data: bytes, content_type: str, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:    # noqa: A002 (the base class's name)
        """Quiet: the terminal shows the URL and errors, not one line per request."""
