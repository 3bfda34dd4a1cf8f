"""The Kubeflow Model Registry sink: a version of inkbooth's registry as a RegisteredModel, a ModelVersion
of the same name (``v3``) and its ModelArtifact.

Through the ``model-registry`` client (``pip install 'inkbooth[model-registry]'``), pinned with the
server's OpenAPI schema it speaks (``tests/data/model-registry-v0.3.8.openapi.yaml``; every request this
sink makes is validated against it in tests/test_sinks.py). Before creating anything the version is
looked up by name under its registered model:

* there, with our content hash (custom property ``inkbooth.content_hash``) and its model artifact:
  nothing to do; there without the artifact (an attempt killed between the two): the artifact is
  added; there with another content hash: an error, never overwritten;
* missing: ``register_model`` creates the registered model (if missing), the version with every
  property as a custom property, and the artifact (URI, format and its version, ``storage_key``).

The client runs each request in its own event loop here, under ``timeout`` (its default would
patch asyncio process-wide with nest_asyncio). Credentials: the bearer token from ``token_env``, else
the client's default (the pod's service account token, or ``KF_PIPELINES_SA_TOKEN_PATH``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
import warnings
from collections.abc import Coroutine
from typing import Any

from inkbooth.sinks.record import RegisteredVersion, SinkError
from inkbooth.sinks.settings import SinkConfig


def _client_module() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import model_registry
    except ImportError:
        raise SinkError("the Kubeflow Model Registry client is not installed: "
                        "pip install 'inkbooth[model-registry]'") from None
    finally:
        # Its module calls logging.basicConfig on import: the process's logging is not its to set.
        root.handlers[:], root.level = handlers, level
    return model_registry


class KubeflowSink:
    """One Kubeflow Model Registry (its REST API, through the model-registry client)."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        module = _client_module()
        url = urllib.parse.urlsplit(config.uri)
        secure = url.scheme == "https"
        token = None
        if config.token_env:
            token = os.environ.get(config.token_env)
            if not token:
                raise SinkError(f"token_env: the environment variable {config.token_env} is not set")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="User access token is missing")
            # The constructor asks the server for one registered model: this is where an absent server fails.
            self.client = module.ModelRegistry(
                f"{url.scheme}://{url.hostname}", url.port or (443 if secure else 80), author=config.author,
                is_secure=secure, user_token=token, custom_ca=config.custom_ca or None, async_runner=self._run,
                # Its warnings about ports other than 80/443 would fire for every in-cluster service (8080).
                log_level=logging.ERROR)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, self.config.timeout))
        except TimeoutError:
            raise SinkError(f"no answer in {self.config.timeout:g}s") from None
        finally:
            loop.close()

    def check(self) -> str:
        first = next(self.client.get_registered_models().page_size(1), None)
        return f"Kubeflow Model Registry answers ({'some' if first else 'no'} registered models visible)"

    def register(self, record: RegisteredVersion) -> str:
        from model_registry.types import ModelArtifact

        client = self.client
        mv = client.get_model_version(record.name, record.version) if client.get_registered_model(record.name) \
            else None
        if mv is None:
            client.register_model(
                record.name, record.artifact_uri, version=record.version, model_format_name=record.format,
                model_format_version=record.format_version or "unknown", storage_key=self.config.storage_key or None,
                author=self.config.author, owner=self.config.author, version_description=record.description,
                metadata=record.properties())
            mv = client.get_model_version(record.name, record.version)
            if mv is None:
                raise SinkError(f"registered {record.name} {record.version}, but the registry does not find it")
            return self._where(record, mv, "registered")
        theirs = (mv.custom_properties or {}).get("inkbooth.content_hash")
        if theirs != record.content_hash:
            raise SinkError(f"model {record.name} version {record.version} is there with content hash "
                            f"{str(theirs)[:12]}..., not {record.content_hash[:12]}...: another registry's "
                            f"{record.version}? Not overwritten")
        if client.get_model_artifact(record.name, record.version) is None:
            # A killed attempt made the version but not its artifact: the client's own step for it.
            artifact = ModelArtifact(name=record.name, uri=record.artifact_uri, model_format_name=record.format,
                                     model_format_version=record.format_version or "unknown",
                                     storage_key=self.config.storage_key or None)
            client.async_runner(client._api.upsert_model_version_artifact(artifact, mv.id))
            return self._where(record, mv, "completed")
        return self._where(record, mv, "found")

    @staticmethod
    def _where(record: RegisteredVersion, mv: Any, how: str) -> str:
        return f"{record.name} {mv.name} (model version id {mv.id}, {how})"
