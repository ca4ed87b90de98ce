"""The demo's pages: the lists (htmx), one list (a client-rendered app shell), its op log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from demo_project.todos.models import TodoList
from syncapp.models import Op, Stream
from syncapp.permissions import get_permission

#: How many ops the op log page shows, and the most one refresh of its rows returns.
OPLOG_ROWS = 100


def list_stream(pk: UUID) -> str:
    """The stream of one list's todos (``Todo.get_sync_stream``)."""
    return f"todos.list:{pk}"


@require_GET
@login_required
@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    """The todo lists, server-rendered and kept live by the htmx extension."""
    return render(request, "todos/index.html", {"lists": TodoList.objects.all()})


@require_GET
@login_required
@ensure_csrf_cookie
def todo_list(request: HttpRequest, pk: UUID) -> HttpResponse:
    """One list: an app shell that ``todos/list.js`` renders from the sync client's state."""
    the_list = get_object_or_404(TodoList, pk=pk)
    return render(
        request, "todos/list.html", {"todo_list": the_list, "stream": list_stream(the_list.pk)}
    )


@dataclass(frozen=True)
class OpRow:
    """One op, as the op log table shows it."""

    seq: int
    created_at: datetime
    who: str
    is_user: bool
    source: str
    kind: str
    model: str
    object_pk: str
    fields_json: str
    mutation_id: str

    @classmethod
    def of(cls, op: Op) -> OpRow:
        actor = op.actor
        return cls(
            seq=op.seq,
            created_at=op.created_at,
            who=actor.get_username() if actor is not None else (op.source or "system"),
            is_user=actor is not None,
            source=op.source,
            kind=op.kind,
            model=op.model,
            object_pk=op.object_pk,
            fields_json=json.dumps(
                op.fields, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")
            ),
            mutation_id=str(op.mutation_id) if op.mutation_id else "",
        )


def _log_context(request: HttpRequest, pk: UUID) -> dict[str, Any]:
    """The list (or, once deleted, just its stream) whose log ``request`` may read, or 404."""
    stream = list_stream(pk)
    the_list = TodoList.objects.filter(pk=pk).first()
    if the_list is None and not Stream.objects.filter(name=stream).exists():
        raise Http404("No such list.")
    if not get_permission().can_read(request.user, stream):
        # As the API does: a stream you may not read is not described.
        raise Http404("No such list.")
    return {"todo_list": the_list, "list_id": pk, "stream": stream}


def _ops(stream: str, after: int = 0) -> list[OpRow]:
    ops = (
        Op.objects.filter(stream__name=stream, seq__gt=after)
        .select_related("actor")
        .order_by("-seq")[:OPLOG_ROWS]
    )
    return [OpRow.of(op) for op in ops]


@require_GET
@login_required
def oplog(request: HttpRequest, pk: UUID) -> HttpResponse:
    """The last ops of a list's stream, newest first; new ones appear live (htmx)."""
    context = _log_context(request, pk)
    context["ops"] = _ops(context["stream"])
    context["limit"] = OPLOG_ROWS
    return render(request, "todos/oplog.html", context)


@require_GET
@login_required
def oplog_rows(request: HttpRequest, pk: UUID) -> HttpResponse:
    """``?after=<seq>``: the rows of the ops after ``seq``, newest first (for htmx)."""
    context = _log_context(request, pk)
    try:
        after = int(request.GET.get("after", "0") or 0)
    except ValueError:
        return HttpResponseBadRequest("after must be an integer.")
    if after < 0:
        return HttpResponseBadRequest("after must not be negative.")
    return render(request, "todos/_oplog_rows.html", {"ops": _ops(context["stream"], after)})
