"""The codec server: Temporal's remote codec protocol over HTTP, so the Web UI and the `temporal` CLI can show
payloads that workers and clients encrypted (orchestrator/codec.py), with the keys staying on this side.

Protocol (as the Temporal UI and CLI speak it):
- `POST .../encode` and `POST .../decode`, routed on the last path segment only, so the endpoint may sit under a
  prefix (`http://127.0.0.1:8081/default/decode`); query strings are ignored (the UI adds
  `?preserveStorageRefs=true`);
- body and answer `{"payloads": [...]}`, each payload in protobuf JSON form (`metadata` values and `data` base64);
- the `X-Namespace` header names the namespace (one key ring serves them all here);
- the UI calls from the browser, so its origin must be listed for CORS; a preflight from any other origin gets no
  `Access-Control-Allow-Origin`;
- with a token, requests must carry `Authorization: Bearer <token>` (the CLI's `--codec-auth "Bearer <token>"`);
  the CORS preflight never carries it and is answered without.
Errors are 400 (bad body, a payload that cannot be decrypted) or 401 (token) with a one-line reason that never
quotes payload data. `GET /health` answers `ok` for readiness checks."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from google.protobuf import json_format
from loguru import logger
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload

from orchestrator.codec import DecryptionError, EncryptionCodec, KeyRing

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
# What the Temporal UI sends: Authorization (and Authorization-Extras, the OIDC id token) only when configured to
# pass its access token; Content-Type and X-Namespace always.
ALLOWED_HEADERS = ("Content-Type", "X-Namespace", "Authorization", "Authorization-Extras")
OPERATIONS = ("encode", "decode")


class CodecServerError(Exception):
    """The codec server cannot start (bad configuration, address in use)."""


class BadRequest(Exception):
    """A request body the protocol does not allow; the message is the one-line reason sent back."""


def cors_origin(value: str) -> str:
    """`value` as a browser sends it in `Origin` (scheme://host[:port], no path, no trailing slash)."""
    parts = urlsplit(value.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
        raise CodecServerError(f"CORS origin {value!r} must be scheme://host[:port], e.g. http://127.0.0.1:8233")
    return f"{parts.scheme}://{parts.netloc}"


def expected_authorization(token: str | SecretStr | None) -> str | None:
    if token is None:
        return None
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not secret or any(c.isspace() for c in secret):
        raise CodecServerError("the codec server token must be non-empty and contain no whitespace")
    return f"Bearer {secret}"


def is_authorized(request: Request, expected: str | None) -> bool:
    if expected is None:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    presented = f"Bearer {credentials.strip()}" if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(presented.encode(), expected.encode())


MAX_BODY_BYTES = 16 * 1024 * 1024


def request_payloads(body: bytes) -> list[Payload]:
    """The payloads in a request body; BadRequest says what is wrong without quoting the body."""
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("payloads", []), list):
        raise BadRequest('body must be a JSON object {"payloads": [...]}')
    payloads = []
    for index, item in enumerate(document.get("payloads", [])):
        try:
            if not isinstance(item, dict):
                raise TypeError
            payloads.append(json_format.ParseDict(item, Payload()))
        except (json_format.ParseError, AttributeError, TypeError, ValueError):
            raise BadRequest(
                f"payloads[{index}] is not a Payload in protobuf JSON form (metadata values and data base64)"
            ) from None
    return payloads


def payloads_json(payloads: Sequence[Payload]) -> dict[str, list[dict[str, Any]]]:
    return {"payloads": [json_format.MessageToDict(payload) for payload in payloads]}


def codec_app(keys: KeyRing, cors_origins: Sequence[str] = (), token: str | SecretStr | None = None) -> Starlette:
    """The codec server's ASGI app: encode and decode with `keys`, CORS for `cors_origins` only (the Temporal UI's
    origin, e.g. http://127.0.0.1:8233), and with a `token`, `Authorization: Bearer <token>` required."""
    codec = EncryptionCodec(keys)
    expected = expected_authorization(token)
    origins = [cors_origin(origin) for origin in cors_origins]

    async def codec_endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":  # not a CORS preflight (the middleware answers those)
            return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})
        operation = request.url.path.rstrip("/").rpartition("/")[2]
        if operation not in OPERATIONS:
            return PlainTextResponse("not found: POST to .../encode or .../decode\n", status_code=404)
        if not is_authorized(request, expected):
            return PlainTextResponse(
                "unauthorized: send Authorization: Bearer <token>\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:  # Temporal's payloads are at most 2 MB each; the UI sends a few at a time
            return PlainTextResponse(f"too large: at most {MAX_BODY_BYTES} bytes\n", status_code=413)
        try:
            payloads = request_payloads(body)
            converted = codec.encrypted(payloads) if operation == "encode" else codec.decrypted(payloads)
        except (BadRequest, DecryptionError) as error:
            return PlainTextResponse(f"bad request: {error}\n", status_code=400)
        return JSONResponse(payloads_json(converted))

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{path:path}", codec_endpoint, methods=["POST", "OPTIONS"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["POST"],
                allow_headers=list(ALLOWED_HEADERS),
                # The UI sends cookies when its codec setting "include credentials" is on.
                allow_credentials=True,
            )
        ],
    )


class _Server(uvicorn.Server):
    # uvicorn would take SIGINT/SIGTERM over for as long as it serves and re-raise them after; here the caller
    # owns the signals and stops the server (the worker and dev stack share the process and the loop).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise CodecServerError(f"codec server cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.setblocking(False)
    return sock


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def codec_server_running(
    keys: KeyRing,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    cors_origins: Sequence[str] = (),
    token: str | SecretStr | None = None,
) -> AsyncIterator[str]:
    """The codec server, serving in this event loop until the block ends; yields its base URL (port 0 picks a
    free port). Leaving the block stops it: no new connections, requests in flight are answered."""
    app = codec_app(keys, cors_origins, token)
    sock = listening_socket(host, port)
    # log_config=None: uvicorn leaves the process's logging configuration alone.
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False)
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise CodecServerError("codec server stopped while starting")
            await asyncio.sleep(0.01)
        url = base_url(host, sock.getsockname()[1])
        logger.info(
            "codec server on {} (keys {}, CORS for {}, {})",
            url,
            ", ".join(keys.ids),
            ", ".join(cors_origins) or "no origin",
            "bearer token required" if token is not None else "no token",
        )
        yield url
    finally:
        server.should_exit = True
        await serving
        sock.close()  # uvicorn closes it once serving; not when it failed before that
        logger.info("codec server stopped")
