"""A stand-in for the Kubeflow Model Registry's REST server that holds every request to the server's
published OpenAPI schema (tests/data/model-registry-v0.3.8.openapi.yaml).

The real server is a Go service in a container, which cannot run here. This one answers the few
operations a client needs to register a model (find/create registered models, versions and
artifacts) from an in-memory store, and checks each request before answering it:

* the method and path are an operation of the schema (path templates matched), and the bearer
  token the schema's global ``security`` asks for is there (and is the expected one);
* every query parameter is one the operation (or its path) declares, with a value its schema
  accepts (enums: ``orderBy``, ``sortOrder``, ``artifactType``), and every required one is given;
* a body only where the operation takes one, ``application/json``, valid under its schema
  (``OAS30WriteValidator``: types, required fields, formats, discriminators, no read-only fields)
  and with no field the schema does not name (the schema does not say ``additionalProperties:
  false``; a misspelt field would otherwise pass).

A request that fails any check is answered 400 (or 401, or 404 for an unknown path) with a
schema-valid ``Error`` and recorded in ``violations``. Every answer is itself checked against the
operation's response schema for its status (``OAS30ReadValidator`` and the same unknown-field
rule): a fake that answered off-schema would be recorded there too. Operations of the schema this
fake does not serve are answered 501 and recorded.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker

SCHEMA = Path(__file__).resolve().parent / "data" / "model-registry-v0.3.8.openapi.yaml"
PREFIX = "/api/model_registry/v1alpha3"


class Violation(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Schema:
    """The OpenAPI document: operations by method and path template, and validation against its schemas."""

    def __init__(self, path: Path = SCHEMA):
        self.doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.operations = []  # (method, regex, template, operation, path-level parameters)
        for template, item in self.doc["paths"].items():
            names = re.findall(r"{([^}]+)}", template)
            regex = re.compile("^" + re.sub(r"{[^}]+}", "([^/]+)", template) + "$")
            for method in ("get", "post", "patch", "put", "delete"):
                if method in item:
                    self.operations.append((method.upper(), regex, template, names, item[method],
                                            item.get("parameters", [])))

    def deref(self, node: Any) -> Any:
        """``node`` with its ``$ref`` (a local JSON pointer) followed, as often as needed."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part]
            seen += 1
            assert seen < 50, ref
        return node

    def match(self, method: str, path: str) -> tuple[dict, dict, list]:
        """(operation, path parameters, declared parameters) of a request; Violation(404) for none."""
        for m, regex, _template, names, op, path_params in self.operations:
            found = regex.match(path)
            if found and m == method:
                params = [self.deref(p) for p in [*path_params, *op.get("parameters", [])]]
                return op, dict(zip(names, map(urllib.parse.unquote, found.groups()))), params
        raise Violation(404, f"{method} {path}: no such operation in the schema")

    def _validator(self, cls: type, schema: Any) -> Any:
        return cls({**schema, "components": self.doc["components"]} if "$ref" not in schema
                   else {"$ref": schema["$ref"], "components": self.doc["components"]},
                   format_checker=oas30_format_checker)

    def errors(self, schema: Any, value: Any, *, write: bool) -> list[str]:
        """Why ``value`` is not valid under ``schema`` (request bodies: write rules; responses: read rules)."""
        validator = self._validator(OAS30WriteValidator if write else OAS30ReadValidator, schema)
        found = [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message[:300]}"
                 for e in validator.iter_errors(value)]
        return found + self.unknown_fields(schema, value, "(body)")

    def unknown_fields(self, schema: Any, value: Any, where: str) -> list[str]:
        """Fields of ``value`` that ``schema`` does not name (following $ref, allOf, discriminated oneOf)."""
        schema = self.deref(schema)
        if isinstance(value, list):
            items = schema.get("items")
            return [e for i, v in enumerate(value) for e in self.unknown_fields(items, v, f"{where}[{i}]")] \
                if items else []
        if not isinstance(value, dict):
            return []
        for key in ("oneOf", "anyOf"):
            if key in schema:
                disc = schema.get("discriminator") or {}
                target = (disc.get("mapping") or {}).get(value.get(disc.get("propertyName", "")))
                return self.unknown_fields({"$ref": target}, value, where) if target else []
        props: dict[str, Any] = {}
        extra: list[Any] = []

        def collect(node: Any) -> None:
            node = self.deref(node)
            for sub in node.get("allOf", []):
                collect(sub)
            props.update(node.get("properties", {}))
            if isinstance(node.get("additionalProperties"), dict):
                extra.append(node["additionalProperties"])

        collect(schema)
        if not props and not extra:
            return []
        errors = []
        for k, v in value.items():
            if k in props:
                errors += self.unknown_fields(props[k], v, f"{where}.{k}")
            elif extra:
                errors += self.unknown_fields(extra[0], v, f"{where}.{k}")
            else:
                errors.append(f"{where}: field {k!r} is not in the schema")
        return errors

    def response_schema(self, op: dict, status: int) -> Any:
        response = self.deref(op["responses"].get(str(status)))
        if response is None:
            return None
        return ((response.get("content") or {}).get("application/json") or {}).get("schema")


class FakeModelRegistry:
    """The fake server: ``url``, ``token``; ``requests`` (each (method, path, query, body, operationId))
    and ``violations``; ``models``, ``versions``, ``artifacts`` (id -> entity), which a test may edit."""

    SERVED = {"getRegisteredModels", "findRegisteredModel", "createRegisteredModel", "getRegisteredModel",
              "findModelVersion", "createModelVersion", "getModelVersion", "findModelArtifact",
              "upsertModelVersionArtifact", "getModelVersionArtifacts"}

    def __init__(self, token: str = "test-token", schema: Schema | None = None):
        self.schema = schema or Schema()
        self.token = token
        self.requests: list[tuple[str, str, dict, Any, str]] = []
        self.violations: list[str] = []
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}
        self.links: dict[str, str] = {}  # artifact id -> model version id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                fake._handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeModelRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def operations(self) -> list[str]:
        return [r[4] for r in self.requests]

    # ---- one request -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        op: dict = {}
        body: Any = None
        try:
            op, path_params, declared = self.schema.match(h.command, url.path)
            body = self._check(h, op, query, declared, raw)
            with self._lock:
                self.requests.append((h.command, url.path, query, body, op["operationId"]))
                status, answer = self._serve(op["operationId"], path_params,
                                             {k: v[0] for k, v in query.items()}, body)
        except Violation as v:
            with self._lock:
                self.requests.append((h.command, url.path, query, body, op.get("operationId", "?")))
                self.violations.append(f"{h.command} {h.path}: {v}")
            status, answer = v.status, {"code": str(v.status), "message": str(v)}
            op = {}  # how a server answers a request off its schema is not for the schema to say
        if op:
            schema = self.schema.response_schema(op, status)
            if schema is None:
                self.violations.append(f"{op['operationId']}: the fake answered {status}, not a status the schema lists")
            else:
                for e in self.schema.errors(schema, answer, write=False):
                    self.violations.append(f"{op['operationId']} answer {status}: {e}")
        data = json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _check(self, h: BaseHTTPRequestHandler, op: dict, query: dict, declared: list, raw: bytes) -> Any:
        security = op.get("security", self.schema.doc.get("security"))
        if security and {"Bearer": []} in security:
            auth = h.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                raise Violation(401, "no bearer token (the schema's security: Bearer)")
            if auth[7:].strip() != self.token:
                raise Violation(401, "wrong bearer token")
        params = {p["name"]: p for p in declared if p["in"] == "query"}
        for name, values in query.items():
            if name not in params:
                raise Violation(400, f"query parameter {name!r} is not declared for {op['operationId']}")
            if len(values) != 1:
                raise Violation(400, f"query parameter {name!r} given {len(values)} times")
            errors = self.schema.errors(params[name]["schema"], values[0], write=True)
            if errors:
                raise Violation(400, f"query parameter {name}={values[0]!r}: {'; '.join(errors)}")
        missing = [n for n, p in params.items() if p.get("required") and n not in query]
        if missing:
            raise Violation(400, f"required query parameter(s) missing: {missing}")
        spec = op.get("requestBody")
        if spec is None:
            if raw.strip():
                raise Violation(400, f"{op['operationId']} takes no body")
            return None
        spec = self.schema.deref(spec)
        if not raw.strip():
            if spec.get("required"):
                raise Violation(400, f"{op['operationId']}: the body is required")
            return None
        ctype = h.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in spec["content"]:
            raise Violation(400, f"content type {ctype!r}; the schema takes {sorted(spec['content'])}")
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise Violation(400, f"body is not JSON: {e}") from None
        errors = self.schema.errors(spec["content"][ctype]["schema"], body, write=True)
        if errors:
            raise Violation(400, f"{op['operationId']} body: {'; '.join(errors)}")
        return body

    # ---- the store -----------------------------------------------------------------------------------

    def _new(self, body: dict, **fields: Any) -> dict:
        now = str(int(time.time() * 1000))
        return {**body, "id": str(next(self._ids)), "createTimeSinceEpoch": now, "lastUpdateTimeSinceEpoch": now,
                **fields}

    @staticmethod
    def _page(items: list[dict], query: dict) -> dict:
        size = int(query.get("pageSize") or 100)
        shown = items[:size]
        return {"items": shown, "nextPageToken": "", "pageSize": size, "size": len(shown)}

    @staticmethod
    def _one(found: list[dict], what: str) -> tuple[int, dict]:
        if not found:
            return 404, {"code": "404", "message": f"no {what}"}
        return 200, found[0]

    def _serve(self, op: str, path: dict, query: dict, body: Any) -> tuple[int, dict]:
        if op not in self.SERVED:
            raise Violation(501, f"{op} is in the schema but this fake does not serve it")
        if op == "getRegisteredModels":
            return 200, self._page(list(self.models.values()), query)
        if op == "findRegisteredModel":
            return self._one([m for m in self.models.values() if m["name"] == query.get("name")
                              or (query.get("externalId") and m.get("externalId") == query["externalId"])],
                             "registered model")
        if op == "getRegisteredModel":
            return self._one([m for m in self.models.values() if m["id"] == path["registeredmodelId"]],
                             "registered model")
        if op == "createRegisteredModel":
            if any(m["name"] == body["name"] for m in self.models.values()):
                return 409, {"code": "409", "message": f"registered model {body['name']} exists"}
            model = self._new(body, state=body.get("state", "LIVE"))
            self.models[model["id"]] = model
            return 201, model
        if op == "findModelVersion":
            return self._one([v for v in self.versions.values() if v["name"] == query.get("name")
                              and v["registeredModelId"] == query.get("parentResourceId")], "model version")
        if op == "getModelVersion":
            return self._one([v for v in self.versions.values() if v["id"] == path["modelversionId"]], "model version")
        if op == "createModelVersion":
            if body["registeredModelId"] not in self.models:
                return 400, {"code": "400", "message": "no such registered model"}
            if any(v["name"] == body["name"] and v["registeredModelId"] == body["registeredModelId"]
                   for v in self.versions.values()):
                return 409, {"code": "409", "message": f"version {body['name']} exists"}
            version = self._new(body, state=body.get("state", "LIVE"))
            self.versions[version["id"]] = version
            return 201, version
        if op == "findModelArtifact":
            found = [a for i, a in self.artifacts.items() if a.get("name") == query.get("name")
                     and self.links.get(i) == query.get("parentResourceId")]
            return self._one(found, "model artifact")
        if op == "getModelVersionArtifacts":
            return 200, self._page([a for i, a in self.artifacts.items() if self.links.get(i) == path["modelversionId"]],
                                   query)
        if op == "upsertModelVersionArtifact":
            if path["modelversionId"] not in self.versions:
                return 404, {"code": "404", "message": "no such model version"}
            artifact = self._new(body, state=body.get("state", "LIVE"))
            self.artifacts[artifact["id"]] = artifact
            self.links[artifact["id"]] = path["modelversionId"]
            return 201, artifact
        raise AssertionError(op)
