"""Plain Django views: the service worker, served from where its scope should start."""

from __future__ import annotations

from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

SERVICE_WORKER = "syncapp/sw.js"


@require_GET
def service_worker(request: HttpRequest) -> HttpResponse:
    """``sw.js`` with ``Service-Worker-Allowed: /``.

    A service worker controls the pages under the URL it is served from, so mount this
    view at the site's root (``path("sw.js", service_worker)``) for it to cover every page.
    """
    path = finders.find(SERVICE_WORKER)
    if not path:
        raise Http404("syncapp/sw.js is not among the static files")
    with open(path, "rb") as source:
        body = source.read()
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"
    return response
