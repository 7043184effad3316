"""The explorer's FastAPI app: the JSON API and the HTML pages over one `Explorer`, and one error
handler that answers API paths with JSON and every other path with an HTML error page."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from tessera.explorer.web.api import api_router
from tessera.explorer.web.bridge import bridge_router
from tessera.explorer.web.bridge_orders import fundings_router
from tessera.explorer.web.markup import e, page
from tessera.explorer.web.queries import PAGE_SIZE, Explorer
from tessera.explorer.web.site import site_router


def create_app(engine: Engine, page_size: int = PAGE_SIZE) -> FastAPI:
    """The app over `engine`; `page_size`: rows per page of the list pages (and their API)."""
    explorer = Explorer(engine, page_size)
    app = FastAPI(title="Tessera explorer", version="1",
                  description="Figures recomputed from the indexed events of Tessera's contracts, "
                              "each with the transactions behind it (docs/explorer.md).",
                  docs_url=None, redoc_url=None)   # the stock docs pages load from a CDN
    app.state.explorer = explorer
    app.add_exception_handler(StarletteHTTPException, _errors)
    app.include_router(api_router(explorer))
    app.include_router(site_router(explorer))
    app.include_router(fundings_router(explorer))      # before /bridge/{message_id}
    app.include_router(bridge_router(explorer))
    return app


async def _errors(request: Request, exc: StarletteHTTPException):
    if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
    return page(title, f'<p class="err">{e(exc.detail)}</p><p><a href="/">overview</a></p>',
                status=exc.status_code)
