"""The SIMULATED OpenAI-compatible upstream of tests/fakes/openai_upstream.py plus `GET /v1/models`,
the cheap call a BYOK test makes. Errors can echo the bearer key back (as a careless upstream
might) so tests can check that it never reaches our responses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.loopback import serving
from tests.fakes.openai_upstream import Script, _handler


@dataclass
class ModelsScript(Script):
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "gpt-4o"])
    echo_key_in_errors: bool = False
    models_body: Any = None  # overrides the /models answer, e.g. a non-OpenAI page


def _models_handler(script: ModelsScript) -> type:
    base = _handler(script)

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:  # noqa: N802
            authorization = self.headers.get("Authorization", "")
            script.requests.append({"path": self.path, "method": "GET"})
            script.auth_headers.append(authorization)
            if not self.path.rstrip("/").endswith("/models"):
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            if script.status != 200:
                message = f"simulated {script.status}"
                if script.echo_key_in_errors:
                    message = f"Incorrect API key provided: {authorization.removeprefix('Bearer ')}"
                self._json(script.status, {"error": {"message": message, "type": "invalid_request_error"}})
                return
            if script.models_body is not None:
                self._json(200, script.models_body)
                return
            self._json(
                200,
                {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "sim"} for m in script.models]},
            )

    return Handler


@contextmanager
def simulated_byok_upstream(script: ModelsScript | None = None) -> Iterator[tuple[str, ModelsScript]]:
    """Yield (base_url ending in /v1, script) for a server that runs until the block ends."""
    script = script or ModelsScript()
    with serving(_models_handler(script), "/v1") as url:
        yield url, script
