"""A stand-in for the KFP v2 REST API on 127.0.0.1 that records what the kfp client sends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class KFPStandIn:
    """``version`` is the backend's tag_name in healthz; ``runs`` maps run ids to what GET /runs/<id> returns."""

    def __init__(self, version: str = "2.17.0") -> None:
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.version = version
        self.runs: dict[str, dict] = {}
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                standin.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                         "body": body, "headers": dict(self.headers)})
                path = url.path
                if path.endswith("/healthz"):
                    return self._reply(200, {"commit_sha": "0" * 40, "tag_name": standin.version, "multi_user": False})
                if "/runs/" in path and self.command == "GET" and path.rsplit("/", 1)[1] in standin.runs:
                    return self._reply(200, standin.runs[path.rsplit("/", 1)[1]])
                if path.endswith("/experiments") and self.command == "GET":
                    wanted = json.dumps(parse_qs(url.query).get("filter", [""])[0])
                    found = [e for name, e in standin.experiments.items() if name in wanted]
                    return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
                if path.endswith("/experiments") and self.command == "POST":
                    exp = {"experiment_id": f"exp-{len(standin.experiments) + 1}", "display_name": body["display_name"]}
                    standin.experiments[body["display_name"]] = exp
                    return self._reply(200, exp)
                if path.endswith("/runs") and self.command == "POST":
                    return self._reply(200, {"run_id": f"run-{len(standin.requests)}", **body})
                if path.endswith("/recurringruns") and self.command == "POST":
                    return self._reply(200, {"recurring_run_id": f"rr-{len(standin.requests)}", **body})
                return self._reply(404, {"error": f"stand-in has no {self.command} {path}"})

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def posted(self, suffix: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith(suffix)]

    def __enter__(self) -> KFPStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
