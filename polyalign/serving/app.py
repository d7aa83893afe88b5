"""The FastAPI app of ``polyalign serve``: ``/embed``, ``/search``, ``/items``, ``/health``, ``/info``,
``/metrics`` and the search page at ``/``."""

from __future__ import annotations

import contextlib
import gc
import json
import os
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.plugin_manager import default_plugins
from polyalign.files.json_file import parse_json
from polyalign.inference.model_card import requirements
from polyalign.inference.search import show_value
from polyalign.inference.trained import TrainedModel, load

from .batching import MicroBatcher
from .candidates import MEDIA_TYPES, CandidateSet, load_candidates
from .jobs import Done, Job, run_jobs
from .limits import BodyTooLarge, Gate, Limits
from .metrics import ServeMetrics
from .values import RequestError, check_decode_budget, count_values, form_value, inline_value, read_json, upload_value

PAGE = Path(__file__).resolve().parent / "page"
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}
TOKEN_ENV = "POLYALIGN_SERVE_TOKEN"
SETTINGS_ENV = "POLYALIGN_SERVE_SETTINGS"
# what a request without values is told, by route (its JSON key) and by body: JSON, or a form (the page's)
NO_VALUES = {"values": ('send at least one, e.g. {"values": {"text": ["a red circle"]}}',
                        "send at least one form field named after a modality (a file, or text)"),
             "query": ('give the query, e.g. {"query": {"text": "a red circle"}, "target": "image"}',
                       "give the query: a file or text for at least one modality other than the target")}  # how `polyalign serve --workers N` hands its options to each worker


@dataclass
class ServeSettings:
    """What ``polyalign serve`` was given: the model, its candidates, limits and token."""

    model: str
    checkpoint: str = "last"
    device: str = "auto"
    candidates: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    token: str | None = None
    threads: int | None = None  # torch's intra-op threads (None: torch's default)

    def to_json(self) -> str:
        """The settings as JSON (for the workers of ``--workers N``)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Settings written by :meth:`to_json`."""
        raw = parse_json(text, "serve settings")
        return cls(**{**raw, "limits": Limits(**raw["limits"])})


def model_card(model: TrainedModel, candidates: dict[str, CandidateSet], limits: Limits) -> dict[str, Any]:
    """What ``/info`` answers: the model's modalities, size, loss and plugins; the candidates; the limits."""
    recipe = model.recipe
    return {"name": recipe.name, "description": recipe.description, "polyalign_version": version("polyalign"),
            "modalities": model.modalities, "embed_dim": model.embed_dim, "normalize": recipe.model.normalize,
            "encoders": {m: node.encoder.plugin for m, node in recipe.modalities.items()},
            "loss": [{"plugin": n.plugin, "weight": n.weight} for n in recipe.losses],
            "scored_by": f"{type(model.loss).__name__}.score", "checkpoint": model.checkpoint,
            "weights_sha256": model.weights_sha256, "plugins": requirements(recipe, default_plugins()),
            "candidates": [c.describe() for c in candidates.values()],
            "limits": {"max_body_mb": limits.max_body_mb, "max_values": limits.max_values, "max_k": limits.max_k,
                       "max_decoded_millions": limits.max_decoded_millions}}


class Service:
    """A loaded model, its candidate sets and the batcher that runs requests on it."""

    def __init__(self, model: TrainedModel, candidates: dict[str, CandidateSet], limits: Limits,
                 metrics: ServeMetrics):
        self.model, self.candidates, self.limits, self.metrics = model, candidates, limits, metrics
        self.batcher: MicroBatcher[Job] = MicroBatcher(self._run, limits.max_batch, limits.batch_wait_ms / 1000,
                                                       metrics.batch_requests.observe)

    def _run(self, jobs: list[Job]) -> list[Done | Exception]:
        self.metrics.batch_values.observe(sum(len(v) for job in jobs for v in job.values.values()))
        return run_jobs(self.model, self.candidates, jobs)

    def check_modality(self, modality: str) -> None:
        """A 422 naming the model's modalities unless ``modality`` is one."""
        try:
            self.model.check_modality(modality)
        except PolyalignError as exc:
            raise RequestError(422, str(exc)) from None

    async def form_values(self, request: Request) -> dict[str, list[Any]]:
        """Multipart fields as values by modality: files are uploads, text fields inline values."""
        n = self.limits.max_values
        try:
            form = await request.form(max_files=n, max_fields=n + 2, max_part_size=self.limits.max_body_bytes)
        except HTTPException as exc:
            status = 413 if "Maximum number" in str(exc.detail) else 400
            raise RequestError(status, f"{exc.detail} (at most {n} values per request: polyalign serve "
                                       f"--max-values)" if status == 413 else str(exc.detail)) from None
        values: dict[str, list[Any]] = {}
        for key, item in form.multi_items():
            given = values.setdefault(key, [])
            if isinstance(item, UploadFile):
                given.append(upload_value(await item.read(), item.filename, item.content_type))
            else:
                given.append(item)
        return values

    async def request_values(self, request: Request, json_key: str, params: tuple[str, ...]
                             ) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """Values by modality and the other parameters of a JSON or multipart request, checked."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            fields = await self.form_values(request)
            extra = {p: fields.pop(p)[-1] for p in params if p in fields}
            raw = {m: [form_value(m, i, v) if isinstance(v, str) else v for i, v in enumerate(vs)]
                   for m, vs in fields.items()}
        elif kind in ("application/json", ""):
            body = read_json(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get(json_key), dict):
                raise RequestError(422, f"the JSON body must be an object with {json_key!r}: an object of values "
                                        f"by modality; see GET /info for the modalities")
            extra = {p: body[p] for p in params if p in body}
            raw = {m: self._json_list(m, vs, json_key) for m, vs in body[json_key].items()}
        else:
            raise RequestError(415, f"content type {kind!r} is not accepted; send application/json or "
                                    f"multipart/form-data")
        for m in raw:
            self.check_modality(m)
        count_values(raw, self.limits.max_values, NO_VALUES[json_key][kind == "multipart/form-data"])
        check_decode_budget(raw, self.limits.max_decoded_millions)
        return raw, extra

    def _json_list(self, modality: str, given: Any, json_key: str) -> list[Any]:
        if json_key == "query":  # one query tuple: one value per modality
            return [inline_value(modality, 0, given)]
        if not isinstance(given, list):
            raise RequestError(422, f"values of {modality!r} must be a list (one entry per value), got "
                                    f"{type(given).__name__}")
        return [inline_value(modality, i, v) for i, v in enumerate(given)]

    def search_params(self, values: dict[str, list[Any]], extra: dict[str, Any]) -> tuple[tuple[str, ...], int]:
        """The target modality (or modalities: candidate tuples) and k of a search, checked against the
        candidates and the limits."""
        given = extra.get("target")
        target = tuple(t.strip() for t in given.split(",")) if isinstance(given, str) else given
        if (not isinstance(target, (tuple, list)) or not target
                or not all(isinstance(t, str) and t for t in target)):
            raise RequestError(422, f"give the target modality ('target': a name, or a list of names for candidate "
                                    f"tuples); this server ranks candidates of: "
                                    f"{', '.join(self.candidates) or 'none'}")
        for t in target:
            self.check_modality(t)
            if t not in self.candidates:
                raise RequestError(422, f"this server has no candidates of {t!r}; it ranks: "
                                        f"{', '.join(self.candidates) or 'none'} (start it with --candidates "
                                        f"{t}=SOURCE or --index {t}=FILE.faiss)")
            if t in values:
                raise RequestError(422, f"{t!r} is both a target and a query modality; query with the others")
        several = [m for m, vs in values.items() if len(vs) != 1]
        if several:
            raise RequestError(422, f"a search is one query: give one value of {several[0]!r}, not "
                                    f"{len(values[several[0]])}")
        k = extra.get("k", 5)
        try:
            k = int(k) if not isinstance(k, (bool, float)) else None
        except (TypeError, ValueError):
            k = None
        if k is None or k < 1:
            raise RequestError(422, f"k must be a whole number of at least 1, got {extra.get('k')!r}")
        if k > self.limits.max_k:
            raise RequestError(422, f"k = {k} is above the limit of {self.limits.max_k} (polyalign serve --max-k)")
        return tuple(dict.fromkeys(target)), k

    def hit_json(self, target: tuple[str, ...], hit: Any) -> dict[str, Any]:
        """One hit as JSON: rank, id, score, row, label (where the candidates have one), the value it
        came from, its text (a text candidate's, inline or its .txt file's), the URL of its file (for
        candidate tuples, value, text and file by modality), and the ids of the other candidates
        holding the same value (ranked once, as this hit)."""
        values, texts, media = {}, {}, {}
        for m in target:
            found = self.candidates[m]
            value = None if found.values is None else found.values[hit.index]
            values[m] = None if value is None else show_value(value)
            texts[m] = found.known.text(hit.index)
            media[m] = f"/items/{m}/{hit.index}" if found.media_file(hit.index) is not None else None
        label = next((found.known.label(hit.index) for m in target
                      if (found := self.candidates[m]).known.labels is not None), None)
        one = len(target) == 1
        return {"rank": hit.rank, "id": hit.id, "score": hit.score, "row": hit.index, "label": label,
                "value": values[target[0]] if one else values, "text": texts[target[0]] if one else texts,
                "media": media[target[0]] if one else media, "same_value": list(hit.same)}


def error_response(status: int, detail: str) -> JSONResponse:
    """A JSON error answer ``{"detail": ...}``."""
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(model: TrainedModel, candidates: dict[str, CandidateSet] | None = None,
               limits: Limits | None = None, token: str | None = None) -> Any:
    """The ASGI app serving ``model`` (wrapped in the gate: token, body limit, metrics)."""
    limits = limits or Limits()
    metrics = ServeMetrics()
    service = Service(model, candidates or {}, limits, metrics)
    card = model_card(model, service.candidates, limits)
    pages = {route: ((PAGE / name).read_bytes(), kind) for route, (name, kind) in PAGE_FILES.items()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(title="polyalign", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(PolyalignError)
    async def failed(request: Request, exc: PolyalignError) -> JSONResponse:
        if isinstance(exc, PluginError):  # a plugin broke its contract: the server's fault, not the request's
            return error_response(500, f"a plugin failed: {exc}")
        return error_response(422, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nobody to answer: counted in /metrics, nothing in the log

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        error = RequestError(500, f"unexpected {type(exc).__name__} (a bug in polyalign or a plugin): {exc}")
        return error_response(error.status, str(error))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return card

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # the two busy routes answer with JSONResponse itself: FastAPI's encoder would walk every number again
    @app.post("/embed")
    async def embed(request: Request) -> JSONResponse:
        values, _ = await service.request_values(request, "values", ())
        done = await service.batcher.submit(Job(values))
        return JSONResponse({"model": model.recipe.name, "embed_dim": model.embed_dim,
                             "embeddings": {m: z.tolist() for m, z in done.embeddings.items()}})

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        values, extra = await service.request_values(request, "query", ("target", "k"))
        target, k = service.search_params(values, extra)
        done = await service.batcher.submit(Job(values, target, k))
        found = service.candidates[target[0]]
        described = found.describe()
        return JSONResponse({"target": target[0] if len(target) == 1 else list(target), "query": sorted(values),
                             "k": k, "candidates": len(found.ids),
                             "distinct": described["distinct"] if len(target) == 1 else len(found.ids),
                             "ranking": described["ranking"],
                             "scored_by": card["scored_by"],
                             "hits": [service.hit_json(target, h) for h in done.hits]})

    @app.get("/items/{modality}/{row}")
    async def item(modality: str, row: int) -> FileResponse:
        found = service.candidates.get(modality)
        path = found.media_file(row) if found is not None else None
        if path is None:
            raise RequestError(404, f"no file to show for candidate {row} of {modality!r}")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lower()])

    for route, (data, kind) in pages.items():
        app.add_api_route(route, lambda data=data, kind=kind: Response(data, media_type=kind), methods=["GET"],
                          include_in_schema=False)
    return Gate(app, limits, metrics, token)


def build_app(settings: ServeSettings) -> Any:
    """Load the model and candidates ``settings`` name (checked as ``polyalign.load`` checks them)
    and return the app."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = load(settings.model, checkpoint=settings.checkpoint, device=settings.device)
    candidates = load_candidates(model, settings.candidates, settings.indexes)
    app = create_app(model, candidates, settings.limits, settings.token)
    # Everything loaded so far (torch, the plugins' libraries, the model) lives as long as the server:
    # kept out of the collector, whose full passes over it stalled every request for up to a second.
    gc.collect()
    gc.freeze()
    return app


def app_from_env() -> Any:
    """The app of one worker of ``polyalign serve --workers N`` (settings from the environment)."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise PolyalignError(f"{SETTINGS_ENV} is not set; start workers with `polyalign serve --workers N`")
    return build_app(ServeSettings.from_json(text))
