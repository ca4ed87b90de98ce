"""Responses encoded by msgspec, so Structs, UUIDs and pre-encoded ops need no conversion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from rest_framework.renderers import BaseRenderer

_encoder = msgspec.json.Encoder()


class MsgspecJSONRenderer(BaseRenderer):
    """Compact JSON; ``application/problem+json`` when the response says so."""

    media_type = "application/json"
    format = "json"
    charset = None

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        return _encoder.encode(data)
