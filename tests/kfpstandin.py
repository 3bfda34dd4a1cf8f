"""A stand-in for the KFP v2 REST API on 127.0.0.1: it checks what the kfp client sends against the
API's own schema and answers in it, and records every request.

The schema is the one the kfp client itself is generated from: ``kfp-server-api`` (2.17.3, pinned with
kfp), whose models carry each message's fields and types. A request body is checked field by field
against its model (a field the schema does not have, a wrong type, an enum value it does not list is
refused: the server would refuse it or drop it silently, and either way what was meant would not
arrive), then against the rules the API server applies before it creates anything (kubeflow/pipelines
``backend/src/apiserver/server``): a run or recurring run needs a display name and a pipeline, an
experiment id it names must exist, a recurring run's ``max_concurrency`` is 1 to 10 and its cron has 5
or 6 fields, an experiment's name is new. Runtime parameters must be inputs the pipeline declares, and
every input without a default must be given. Refusals are answered as the API's gateway answers them:
a ``google.rpc.Status`` body with the HTTP status of its code.

Answers are built from the same models and serialised by the client library's own serialiser
(``sanitize_for_serialization``): what a test puts in ``runs`` (the run details an exit task reads) is a
``V2beta1Run`` model (or a dict that must fit one), never free-form JSON. ``healthz`` is the exception:
the server adds ``tag_name`` and ``commit_sha`` that the published schema lacks (inkbooth reads them raw).
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import kfp_server_api
from kfp_server_api import models

_CLIENT = kfp_server_api.ApiClient()
_PRIMITIVES = {"str": str, "bool": bool, "float": (int, float)}
# The int64 fields, which the generated models type as 'str' (proto3 JSON writes an int64 as a
# string, and reads a number or a decimal string).
_INT64 = {("V2beta1RecurringRun", "max_concurrency"), ("V2beta1PeriodicSchedule", "interval_second"),
          ("V2beta1Predicate", "long_value")}
# google.rpc.Code -> HTTP status, as grpc-gateway maps them.
_HTTP = {3: 400, 5: 404, 6: 409, 9: 400}
API = "/apis/v2beta1"


class Refused(Exception):
    """What the API answers with an error: a gRPC code and a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def check(data: Any, kind: str, where: str = "body") -> None:
    """Raise Refused (INVALID_ARGUMENT) where ``data`` does not fit ``kind``: an openapi type of
    kfp-server-api ('str', 'list[V2beta1Predicate]', a model name...). Field names are accepted as
    protobuf's JSON mapping accepts them, in the original or the lowerCamelCase spelling."""
    def bad(what: str) -> Refused:
        return Refused(3, f"invalid {where}: {what}")

    if kind == "object":  # a protobuf Struct or Value: any JSON
        return
    if kind.startswith("list["):
        if not isinstance(data, list):
            raise bad(f"expected a list, got {type(data).__name__}")
        for i, item in enumerate(data):
            check(item, kind[5:-1], f"{where}[{i}]")
        return
    if kind.startswith("dict("):
        if not isinstance(data, dict):
            raise bad(f"expected an object, got {type(data).__name__}")
        value_kind = kind[5:-1].split(", ", 1)[1]
        for key, value in data.items():
            check(value, value_kind, f"{where}.{key}")
        return
    if kind == "int":  # int32/int64 in proto3 JSON: a number or a decimal string
        if isinstance(data, bool) or not (isinstance(data, int) or (isinstance(data, str) and re.fullmatch(r"-?\d+", data))):
            raise bad(f"expected an integer, got {data!r}")
        return
    if kind == "datetime":
        try:
            datetime.datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        except ValueError:
            raise bad(f"expected an RFC 3339 time, got {data!r}") from None
        return
    if kind in _PRIMITIVES:
        if not isinstance(data, _PRIMITIVES[kind]) or (kind == "float" and isinstance(data, bool)):
            raise bad(f"expected {kind}, got {data!r}")
        return
    model = getattr(models, kind)
    if not model.openapi_types and hasattr(model, "allowable_values"):  # an enum: its name or its number
        if data not in model.allowable_values and data not in range(len(model.allowable_values)):
            raise bad(f"{data!r} is not one of {model.allowable_values}")
        return
    if not isinstance(data, dict):
        raise bad(f"expected a {kind} object, got {type(data).__name__}")
    fields = {}
    for attr, key in model.attribute_map.items():
        fields[key] = fields[_camel(key)] = attr
    for key, value in data.items():
        if key not in fields:
            raise bad(f"{kind} has no field {key!r}")
        if value is not None:
            field_kind = "int" if (kind, fields[key]) in _INT64 else model.openapi_types[fields[key]]
            check(value, field_kind, f"{where}.{key}")


def _get(data: dict, name: str, default: Any = None) -> Any:
    return data.get(name, data.get(_camel(name), default))


def serialise(model: Any) -> dict:
    """A model as the API's JSON (the client library's own serialiser)."""
    return _CLIENT.sanitize_for_serialization(model)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_parameters(body: dict) -> None:
    """Runtime parameters against the inputs the pipeline declares."""
    spec = _get(body, "pipeline_spec") or {}
    spec = spec.get("pipeline_spec", spec)  # kfp sends {pipeline_spec, platform_spec} when there is a platform
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    given = _get(_get(body, "runtime_config") or {}, "parameters") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise Refused(3, f"runtime parameters {unknown} are not inputs of the pipeline")
    missing = sorted(n for n, d in declared.items()
                     if n not in given and "defaultValue" not in d and not d.get("isOptional"))
    if missing:
        raise Refused(3, f"the pipeline's inputs {missing} have no default and were not given")


class KFPStandIn:
    """``version`` is the backend's tag_name in healthz; ``runs`` maps run ids to the ``V2beta1Run``
    that GET /runs/<id> answers (runs created through the API are added)."""

    def __init__(self, version: str = "2.17.0") -> None:
        self.requests: list[dict] = []
        self.refused: list[dict] = []  # {"path", "code", "message"} of each request answered with an error
        self.experiments: dict[str, models.V2beta1Experiment] = {}  # by display name
        self.version = version
        self.runs: dict[str, Any] = {}
        self.recurring_runs: dict[str, models.V2beta1RecurringRun] = {}
        self.lock = threading.Lock()
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
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                query = parse_qs(url.query)
                with standin.lock:
                    standin.requests.append({"method": self.command, "path": url.path, "query": query,
                                             "body": body, "headers": dict(self.headers)})
                    try:
                        status, answer = 200, standin._answer(self.command, url.path, query, body)
                    except Refused as e:
                        standin.requests[-1]["refused"] = e.message
                        standin.refused.append({"path": url.path, "code": e.code, "message": e.message})
                        status = _HTTP.get(e.code, 500)
                        answer = {"error": e.message, **serialise(models.GoogleRpcStatus(code=e.code, message=e.message,
                                                                                         details=[]))}
                self._reply(status, answer)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---- the API ------------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict, body: Any) -> dict:
        if not path.startswith(API + "/"):
            raise Refused(5, f"Not Found: {method} {path}")
        route = path[len(API):]
        if method == "GET" and route == "/healthz":
            return {**serialise(models.V2beta1GetHealthzResponse(multi_user=False)),
                    "commit_sha": "0" * 40, "tag_name": self.version}
        if method == "GET" and route.startswith("/runs/"):
            run = self.runs.get(route[len("/runs/"):])
            if run is None:
                raise Refused(5, f"Run {route[len('/runs/'):]} not found")
            answer = serialise(run)
            check(answer, "V2beta1Run", "run the stand-in was given")  # what a test hands it must fit too
            return answer
        if method == "GET" and route == "/experiments":
            return self._list_experiments(query)
        if method == "POST" and route in ("/experiments", "/runs", "/recurringruns"):
            if not isinstance(body, dict):
                raise Refused(3, f"invalid body: expected a JSON object, got {body!r:.80}")
            return {"/experiments": self._create_experiment, "/runs": self._create_run,
                    "/recurringruns": self._create_recurring_run}[route](body)
        raise Refused(5, f"the stand-in does not serve {method} {path}")

    def _list_experiments(self, query: dict) -> dict:
        found = list(self.experiments.values())
        if "filter" in query:
            try:
                wanted = json.loads(query["filter"][0])
            except ValueError:
                raise Refused(3, f"invalid filter {query['filter'][0]!r}") from None
            check(wanted, "V2beta1Filter", "filter")
            for p in wanted.get("predicates", []):
                if _get(p, "operation") not in ("EQUALS", 1) or p.get("key") != "display_name":
                    raise Refused(3, f"the stand-in filters on display_name EQUALS only, got {p}")
                found = [e for e in found if e.display_name == _get(p, "string_value")]
        namespace = query.get("namespace", [""])[0]
        found = [e for e in found if not namespace or e.namespace in ("", namespace)]
        return serialise(models.V2beta1ListExperimentsResponse(experiments=found, total_size=len(found),
                                                               next_page_token=""))

    def _create_experiment(self, body: dict) -> dict:
        check(body, "V2beta1Experiment")
        name = _get(body, "display_name") or ""
        if not name:
            raise Refused(3, "Experiment name is empty. Please specify a valid experiment name")
        if name in self.experiments:
            raise Refused(6, f"Failed to create a new experiment. The name {name} already exists. "
                             "Please specify a new name")
        exp = models.V2beta1Experiment(experiment_id=str(uuid.uuid4()), display_name=name,
                                       description=_get(body, "description") or "",
                                       namespace=_get(body, "namespace") or "", created_at=_now(),
                                       storage_state="AVAILABLE")
        self.experiments[name] = exp
        return serialise(exp)

    def _experiment(self, body: dict) -> str:
        wanted = _get(body, "experiment_id") or ""
        if not wanted:
            if "Default" not in self.experiments:
                self.experiments["Default"] = models.V2beta1Experiment(
                    experiment_id=str(uuid.uuid4()), display_name="Default", created_at=_now(),
                    storage_state="AVAILABLE")
            return self.experiments["Default"].experiment_id
        if wanted not in {e.experiment_id for e in self.experiments.values()}:
            raise Refused(5, f"Failed to get experiment: experiment {wanted} not found")
        return wanted

    def _pipeline(self, body: dict) -> None:
        if not (_get(body, "pipeline_spec") or _get(body, "pipeline_version_reference")):
            raise Refused(3, "a run must have a pipeline spec or a pipeline version reference")
        _check_parameters(body)

    def _create_run(self, body: dict) -> dict:
        check(body, "V2beta1Run")
        if not _get(body, "display_name"):
            raise Refused(3, "The run name is empty. Please specify a valid name")
        self._pipeline(body)
        experiment = self._experiment(body)
        run = models.V2beta1Run(
            run_id=str(uuid.uuid4()), experiment_id=experiment, display_name=_get(body, "display_name"),
            description=_get(body, "description"), pipeline_spec=_get(body, "pipeline_spec"),
            pipeline_version_reference=_get(body, "pipeline_version_reference"),
            runtime_config=_get(body, "runtime_config"), service_account=_get(body, "service_account") or "",
            storage_state="AVAILABLE", state="PENDING", created_at=_now(), scheduled_at=_now(),
            state_history=[models.V2beta1RuntimeStatus(update_time=_now(), state="PENDING")])
        self.runs[run.run_id] = run
        return serialise(run)

    def _create_recurring_run(self, body: dict) -> dict:
        check(body, "V2beta1RecurringRun")
        if not _get(body, "display_name"):
            raise Refused(3, "The recurring run name is empty. Please specify a valid name")
        self._pipeline(body)
        concurrency = int(_get(body, "max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise Refused(3, f"The max concurrency of the recurring run is out of range. Support 1-10. "
                             f"Received {concurrency}.")
        trigger = _get(body, "trigger") or {}
        cron = _get(_get(trigger, "cron_schedule") or {}, "cron")
        if not (cron or _get(trigger, "periodic_schedule")):
            raise Refused(3, "a recurring run needs a trigger: a cron or a periodic schedule")
        if cron is not None and len(cron.split()) not in (5, 6):
            raise Refused(3, f"Schedule cron is not a supported format: {cron!r}")
        experiment = self._experiment(body)
        recurring = models.V2beta1RecurringRun(
            recurring_run_id=str(uuid.uuid4()), display_name=_get(body, "display_name"), experiment_id=experiment,
            pipeline_spec=_get(body, "pipeline_spec"), runtime_config=_get(body, "runtime_config"),
            service_account=_get(body, "service_account") or "", max_concurrency=str(concurrency),
            trigger=trigger, mode=_get(body, "mode") or "ENABLE", no_catchup=bool(_get(body, "no_catchup")),
            created_at=_now(), updated_at=_now(), status="ENABLED")
        self.recurring_runs[recurring.recurring_run_id] = recurring
        return serialise(recurring)

    # ---- for tests ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def posted(self, suffix: str) -> list[dict]:
        """The bodies of the POSTs to paths ending in ``suffix`` that the stand-in accepted."""
        return [r["body"] for r in self.requests
                if r["method"] == "POST" and r["path"].endswith(suffix) and "refused" not in r]

    def __enter__(self) -> KFPStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
