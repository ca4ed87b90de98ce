"""The admin: the op log, streams, idempotency records, and conflicts to resolve."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from syncapp import context, resolution
from syncapp.exceptions import SyncError
from syncapp.models import Conflict, IdempotencyRecord, Op, Stream


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows written by syncapp itself: shown, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Stream)
class StreamAdmin(ReadOnlyAdmin):
    list_display = ["name", "head", "oldest_seq", "epoch", "created_at"]
    search_fields = ["name"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Op)
class OpAdmin(ReadOnlyAdmin):
    list_display = [
        "stream",
        "seq",
        "kind",
        "model",
        "object_pk",
        "version",
        "actor",
        "source",
        "created_at",
    ]
    list_filter = [
        ("stream", admin.RelatedOnlyFieldListFilter),
        "model",
        "kind",
        "source",
        "created_at",
    ]
    search_fields = ["stream__name", "object_pk", "mutation_id"]
    date_hierarchy = "created_at"
    list_select_related = ["stream", "actor"]
    ordering = ["-created_at", "-seq"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # trimming is `manage.py syncapp_trim`, which moves the retained floor


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["key", "owner", "status", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["key", "owner"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting one would let a retry apply its mutation twice


class PendingFirst(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "Pending"), ("resolved", "Resolved"), ("all", "All")]

    def value(self) -> str:
        return super().value() or "pending"

    def choices(self, changelist: Any) -> Any:
        choices = super().choices(changelist)
        next(choices)  # Django's own "All" means no filter, which here is "pending"
        yield from choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value == "all" else queryset.filter(status=value)


@admin.register(Conflict)
class ConflictAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["__str__", "stream", "user", "created_at", "status", "resolution"]
    list_filter = [PendingFirst, "model", "field"]
    search_fields = ["stream", "object_pk", "field"]
    ordering = ["status", "-created_at"]
    actions = ["keep_server", "take_client"]
    change_form_template = "admin/syncapp/conflict/change_form.html"
    readonly_fields = [f.name for f in Conflict._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        resolve = self.admin_site.admin_view(self.resolve_view)
        return [
            path("<int:pk>/resolve/", resolve, name="syncapp_conflict_resolve"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        conflict = self.get_object(request, unquote(object_id))
        if conflict is None:
            raise Http404(f"No conflict {object_id!r}.")
        extra = {
            **(extra_context or {}),
            "conflict": conflict,
            "values": [
                ("Base", conflict.base_value, f"version {conflict.base_version}"),
                ("Server", conflict.server_value, f"version {conflict.server_version}"),
                ("Client", conflict.client_value, f"by {conflict.user or conflict.client_id}"),
            ],
            "resolve_url": reverse("admin:syncapp_conflict_resolve", args=[conflict.pk]),
            "can_resolve": self.has_change_permission(request, conflict),
        }
        return super().change_view(request, object_id, form_url, extra)

    def resolve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        back = reverse("admin:syncapp_conflict_change", args=[pk])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        if not self.has_change_permission(request):
            messages.error(request, "You may not resolve conflicts.")
            return HttpResponseRedirect(back)
        choice = request.POST.get("resolution", "")
        if choice not in ("server", "client", "value"):
            messages.error(request, "Choose how to resolve the conflict.")
            return HttpResponseRedirect(back)
        conflict = get_object_or_404(Conflict, pk=pk)
        value = _parse_value(conflict, request.POST.get("value", "")) if choice == "value" else None
        self._resolve(request, [pk], choice, value)
        return HttpResponseRedirect(back)

    def _resolve(self, request: HttpRequest, ids: list[int], choice: Any, value: Any) -> None:
        done = 0
        with context.attribute(actor=request.user, source="admin"):
            for conflict_id in ids:
                try:
                    resolution.resolve(
                        conflict_id, choice, value, user=request.user, source="admin"
                    )
                    done += 1
                except SyncError as exc:
                    details = "; ".join(
                        f"{name}: {' '.join(msgs)}" for name, msgs in (exc.fields or {}).items()
                    )
                    messages.error(
                        request,
                        f"Conflict {conflict_id}: {exc.message}"
                        f"{' ' + details if details else ''} ({exc.error_code})",
                    )
        if done:
            messages.success(request, f"Resolved {done} conflict(s).")

    @admin.action(description="Keep the server's value", permissions=["change"])
    def keep_server(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, list(queryset.values_list("pk", flat=True)), "server", None)

    @admin.action(description="Take the client's value", permissions=["change"])
    def take_client(self, request: HttpRequest, queryset: QuerySet[Conflict]) -> None:
        self._resolve(request, list(queryset.values_list("pk", flat=True)), "client", None)


def _parse_value(conflict: Conflict, text: str) -> Any:
    """The value a person typed: as is for text fields, else JSON (``true``, ``3``, ...)."""
    if isinstance(conflict.server_value, str) or isinstance(conflict.client_value, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class SyncModelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A ModelAdmin for synced models: its ops are attributed to the admin user."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with context.attribute(actor=request.user, source="admin"):
            return super().changeform_view(request, *args, **kwargs)

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with context.attribute(actor=request.user, source="admin"):
            return super().delete_view(request, *args, **kwargs)

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> TemplateResponse:
        with context.attribute(actor=request.user, source="admin"):
            return super().changelist_view(request, *args, **kwargs)  # type: ignore[return-value]

    @admin.display(description="sync")
    def sync_info(self, obj: Any) -> str:
        return format_html("{} v{}", obj.sync_stream, obj.sync_version)
