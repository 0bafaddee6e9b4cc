"""The service's HTTP side (FastAPI): routes over deploy/service.py, the one
JSON error shape, the body-size cap, the token check and the Prometheus
metrics. ``create_app(state, max_body)``; deploy/serve.py runs it."""
import hmac
import os
import time
import traceback

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException

from deploy.cli import TOP_RESULTS
from deploy.live_database import UnknownImage
from utils.base.errors import UserError

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30)


def error_response(code, message):
    line = (str(message).strip().splitlines() or ["error"])[0][:500]
    return JSONResponse({"error": {"code": code, "message": line}}, status_code=code)


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413,
    by its Content-Length or, when it has none, as it arrives."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self.refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:   # an HTTPException: FastAPI's body parser lets it through
                raise HTTPException(413, self.too_large())
            return message
        await self.app(scope, counted, send)

    def too_large(self):
        return (f"request body over {self.limit // (1 << 20)} MiB: send a smaller image "
                "(the service's --max-body-mb)")

    async def refuse(self, scope, receive, send):
        await error_response(413, self.too_large())(scope, receive, send)


class Metrics:
    """Request counts, latency histograms per endpoint, errors and the
    database size, in a registry of the app's own."""

    def __init__(self, state):
        self.registry = CollectorRegistry()
        self.requests = Counter("hashnet_requests", "HTTP requests", ["endpoint", "method", "code"],
                                registry=self.registry)
        self.latency = Histogram("hashnet_request_seconds", "request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("hashnet_errors", "requests answered with an error (4xx, 5xx)",
                              ["endpoint", "code"], registry=self.registry)
        size = Gauge("hashnet_database_size", "images in the database", registry=self.registry)
        size.set_function(lambda: len(state.service.live) if state.service else 0)

    def record(self, endpoint, method, code, seconds):
        self.requests.labels(endpoint, method, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if code >= 400:
            self.errors.labels(endpoint, str(code)).inc()

    def text(self):
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def endpoint_of(request):
    """The route's path template (``/images/{id}``), so ids do not each get a series."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def parse_ids(text):
    """"3, 5 7" -> [3, 5, 7]."""
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise UserError(f"ids {text!r}: give whole numbers separated by commas or spaces")


def create_app(state, max_body):
    app = FastAPI(title="HashNet retrieval service", docs_url=None, redoc_url=None,
                  description="Hamming search over the HashNet codes of an image database, "
                              "with images added and removed live (docs/retrieval.md).")
    metrics = Metrics(state)

    def ready():
        if state.service is None:
            raise HTTPException(503, f"not ready: {state.status}")
        return state.service

    def authorised(request: Request):
        if not state.token:
            return
        given = request.headers.get("authorization", "")
        given = given[len("Bearer "):] if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), state.token.encode()):
            raise HTTPException(401, "adding and removing images needs the service's token: "
                                    "send the header 'Authorization: Bearer <token>'")

    @app.middleware("http")
    async def count(request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:   # answered by the 500 handler, outside this middleware
            metrics.record(endpoint_of(request), request.method, 500, time.perf_counter() - start)
            raise
        metrics.record(endpoint_of(request), request.method, response.status_code,
                       time.perf_counter() - start)
        return response

    @app.exception_handler(UserError)
    async def user_error(request, err):
        return error_response(404 if isinstance(err, UnknownImage) else 400, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"][1:]) or "request"
        return error_response(422, f"{where}: {first['msg']}")

    @app.exception_handler(HTTPException)
    async def http_error(request, err):   # ours, a malformed multipart body, an unknown route
        return error_response(err.status_code, err.detail)

    @app.exception_handler(Exception)
    async def unexpected(request, err):
        traceback.print_exception(err)
        return error_response(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/health", summary="ready or not; the model, its index and the database size")
    def health():
        if state.service is None:
            return JSONResponse({"ready": False, "status": state.status}, status_code=503)
        return dict(state.service.health(), mutations="token" if state.token else "open")

    @app.post("/search", summary="top-k (and/or a Hamming radius) of an uploaded image or of "
                                 "database ids")
    def search(image: UploadFile | None = File(None, description="a query image"),
               ids: str | None = Form(None, description="database ids, e.g. '3,17'"),
               topk: int = Form(10, ge=TOP_RESULTS.low, le=TOP_RESULTS.high),
               radius: int | None = Form(None, ge=0, description="only results within this "
                                                                  "Hamming distance")):
        service = ready()
        if image is None and not ids:
            raise UserError("nothing to search: upload an image (field 'image') or give "
                            "database ids (field 'ids')")
        data = image.file.read() if image is not None else None
        return service.search(topk, radius, data, parse_ids(ids or ""))

    @app.post("/images", summary="add uploaded images, or paths under the database root",
              dependencies=[Depends(authorised)])
    def add_images(images: list[UploadFile] = File([], description="images to add"),
                   paths: str = Form("", description="paths under the database root, one a line"),
                   labels: str = Form("", description="class numbers of every image added, "
                                                      "e.g. '0 3'")):
        service = ready()
        return service.add([f.file.read() for f in images],
                           [p.strip() for p in paths.splitlines() if p.strip()],
                           parse_ids(labels))

    @app.delete("/images/{image_id}", summary="remove one image",
                dependencies=[Depends(authorised)])
    def remove_image(image_id: int):
        return ready().remove([image_id])

    @app.delete("/images", summary="remove several images", dependencies=[Depends(authorised)])
    def remove_images(ids: list[int] = Query(..., description="ids to remove")):
        return ready().remove(ids)

    @app.get("/images/{image_id}", summary="a database image")
    def image(image_id: int):
        return FileResponse(ready().image_path(image_id))

    @app.get("/thumbs/{image_id}", summary="a cached thumbnail of a database image")
    def thumb(image_id: int):
        return FileResponse(ready().thumbnail(image_id), media_type="image/jpeg")

    @app.get("/metrics", summary="Prometheus metrics")
    def prometheus():
        return metrics.text()

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(WEB_DIR, "index.html"))

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(BodyLimit, limit=max_body)
    return app
