"""The dashboard's routes: a request's method, path and query in, a whole HTTP answer out.

GET (and HEAD) only; every other method is a 405 page with ``Allow: GET, HEAD``; an unknown path
a 404 page; a bad ``?page=`` or version id a 400 page, an unknown version a 404 page; a storage
fault a 503 page with ``Retry-After`` (the only 5xx a retry can fix); anything else a 500 page,
logged. Every answer carries ``SECURITY_HEADERS`` (docs/design.md section 5, dashboard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.dashboard import common, data_pages, registry_pages, serving_pages
from shared.dashboard.common import empty
from shared.dashboard.html import Markup, document, element, link
from shared.dashboard.sources import Sources
from shared.dashboard.style import STYLESHEET
from shared.errors import BadRequest, ProdMLError, is_transient
from shared.logs import get_logger

log = get_logger(__name__)

HTML = "text/html; charset=utf-8"
CSS = "text/css; charset=utf-8"
ALLOWED_METHODS = ("GET", "HEAD")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body and headers (the security headers always among them)."""

    status: int
    body: bytes
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        """The headers to send: the security headers, the content type, then this answer's own."""
        return {**SECURITY_HEADERS, "Content-Type": self.content_type, **self.headers}


Query = Mapping[str, Sequence[str]]
PAGED: dict[str, Callable[[Sources, int], Markup]] = {
    common.VERSIONS: registry_pages.versions,
    common.MONITORING: data_pages.monitoring,
    common.QUARANTINE: data_pages.quarantine,
}
WHOLE: dict[str, Callable[[Sources], Markup]] = {
    common.OVERVIEW: registry_pages.overview,
    common.LIVE: serving_pages.live,
    common.TABLE: serving_pages.table_page,
}
VERSION_PREFIX = common.VERSIONS + "/"


def _render(sources: Sources, path: str, query: Query) -> Answer:
    if path == common.STYLE:
        return Answer(200, STYLESHEET.encode(), CSS)
    if path in PAGED:
        return Answer(200, PAGED[path](sources, common.page_number(query)).encode())
    if path in WHOLE:
        return Answer(200, WHOLE[path](sources).encode())
    if path.startswith(VERSION_PREFIX):
        return Answer(200, registry_pages.card(sources, path[len(VERSION_PREFIX) :]).encode())
    raise BadRequest(f"no page at {path[:200]!r}", code="not_found", status=404)


def error_page(status: int, message: str) -> bytes:
    """The page of an error: its status, what went wrong, a way back."""
    title = {400: "bad request", 404: "not found", 405: "method not allowed", 503: "try again"}.get(
        status, "error"
    )
    return document(
        f"{status} {title}",
        common.NAV,
        "",
        element("p", None, message),
        empty(link(common.OVERVIEW, "overview")),
    ).encode()


def handle(sources: Sources, method: str, path: str, query: Query) -> Answer:
    """The answer to one request (module doc)."""
    allow = {"Allow": ", ".join(ALLOWED_METHODS)}
    if method not in ALLOWED_METHODS:
        message = f"method {method[:20]} is not allowed: the dashboard only reads (GET)"
        return Answer(405, error_page(405, message), headers=allow)
    try:
        return _render(sources, path, query)
    except ProdMLError as exc:
        if is_transient(exc):
            log.warning("dashboard read failed", extra={"fields": {"path": path[:200], "error": str(exc)}})
            message = f"the buckets could not be read just now ({exc}); try again"
            return Answer(503, error_page(503, message), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        status = exc.http_status if 400 <= exc.http_status < 500 else 500
        if status == 500:
            log.exception("dashboard page failed", extra={"fields": {"path": path[:200]}})
            return Answer(500, error_page(500, "internal error; see the function's logs"))
        return Answer(status, error_page(status, str(exc)))
    except Exception:  # a bug: logged with its traceback, the page says no more
        log.exception("dashboard page failed", extra={"fields": {"path": path[:200]}})
        return Answer(500, error_page(500, "internal error; see the function's logs"))
