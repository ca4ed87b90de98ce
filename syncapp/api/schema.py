"""OpenAPI for msgspec Structs: drf-spectacular documents them from their JSON Schema,
so the schema and the validation come from the same types."""

from __future__ import annotations

from typing import Any

import msgspec
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ComponentIdentity, ResolvedComponent

REF = "#/components/schemas/{name}"


class MsgspecStructExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """Lets ``extend_schema`` take msgspec Structs wherever it takes serializers."""

    target_class = "msgspec.Struct"
    match_subclasses = True

    def get_name(self, auto_schema: Any, direction: str) -> str:
        return str(self.target.__name__)

    def get_identity(self, auto_schema: Any, direction: str) -> Any:
        return ComponentIdentity(self.target.__name__)  # type: ignore[no-untyped-call]

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        (ref,), components = msgspec.json.schema_components([self.target], ref_template=REF)
        own = ref["$ref"].rsplit("/", 1)[-1]
        for name, schema in components.items():
            if name != own:
                auto_schema.registry.register_on_missing(
                    ResolvedComponent(  # type: ignore[no-untyped-call]
                        name=name,
                        type=ResolvedComponent.SCHEMA,
                        object=ComponentIdentity(name),  # type: ignore[no-untyped-call]
                        schema=schema,
                    )
                )
        return components[own]  # type: ignore[no-any-return]
