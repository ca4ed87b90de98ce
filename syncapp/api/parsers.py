"""Request bodies: size-limited, decoded once with msgspec into the view's ``body_type``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

import msgspec
from rest_framework.parsers import BaseParser

from syncapp.conf import conf
from syncapp.exceptions import InvalidInput, PayloadTooLarge


def decode(data: bytes, body_type: Any) -> Any:
    """Decode JSON ``data`` into ``body_type``, with typed errors for every way it can fail."""
    try:
        return msgspec.json.decode(data, type=body_type)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), code="invalid") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"Malformed JSON: {exc}", code="parse_error") from exc
    except RecursionError as exc:
        raise InvalidInput("The JSON is nested too deeply.", code="too_deep") from exc


def read_limited(stream: IO[bytes], limit: int) -> bytes:
    """Read at most ``limit`` bytes of ``stream``; raise :class:`PayloadTooLarge` past it."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    return data


class MsgspecJSONParser(BaseParser):
    """JSON bodies up to ``SYNCAPP["MAX_BODY_BYTES"]``, decoded into ``view.body_type``."""

    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = conf.MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and re.fullmatch(r"[0-9]+", length) and int(length) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        view = (parser_context or {}).get("view")
        return decode(read_limited(stream, limit), getattr(view, "body_type", Any))
