"""Protobuf messages as the HTTP transport writes them: Triton's JSON of its model configuration and
statistics, which is not protobuf's own JSON mapping.

Triton's HTTP answers hold every field, those at their default value included (a message field
only when it is set), with 64-bit integers as JSON numbers and enum values by name. Protobuf's
mapping (``json_format``) writes 64-bit integers as strings, and no option changes that, so the
messages are walked here. gRPC answers are the messages themselves.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def http_json(message: Message) -> dict[str, Any]:
    """``message`` as Triton's HTTP JSON (see the module's docstring), fields in declaration order."""
    document: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and _is_map(field):
            entries = getattr(message, field.name)
            value_field = field.message_type.fields_by_name["value"]
            document[field.name] = {str(key): _value(value_field, entries[key]) for key in entries}
        elif field.is_repeated:
            document[field.name] = [_value(field, item) for item in getattr(message, field.name)]
        elif field.message_type is not None and not message.HasField(field.name):
            continue
        else:
            document[field.name] = _value(field, getattr(message, field.name))
    return document


def _is_map(field: FieldDescriptor) -> bool:
    return field.is_repeated and field.message_type.GetOptions().map_entry


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return http_json(value)
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    return value
