"""Task fields from a request message, and a reply message from a task's answer dict.

proto3 leaves no trace of an unset plain field, so an empty ``model`` means the task's
default model and an empty ``version`` its newest ready version, as the .proto says; a dense array in an answer (flow) becomes little-endian
float32 bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ...errors import PayloadTooLarge


def fields_of(message: Message) -> dict[str, Any]:
    """A request message as task fields: set fields only, nested messages as tuples of their fields."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            nested = field.type == FieldDescriptor.TYPE_MESSAGE
            value = [tuple(getattr(v, f.name) for f in v.DESCRIPTOR.fields) if nested else v for v in value]
        elif field.has_presence and not message.HasField(field.name):
            continue
        elif field.name in ("model", "version") and not value:
            continue
        out[field.name] = value
    return out


def to_message(answer: dict[str, Any], message_type: type[Message], max_bytes: int) -> Message:
    """The answer dict as ``message_type``; arrays become float32 bytes if they fit in one message."""
    arrays = {name: value for name, value in answer.items() if isinstance(value, np.ndarray)}
    message = json_format.ParseDict({k: v for k, v in answer.items() if k not in arrays}, message_type())
    for name, array in arrays.items():
        if array.nbytes > max_bytes:  # else grpc fails the send with a message about itself
            raise PayloadTooLarge(
                f"the answer's {name} field is {array.nbytes} bytes, more than this server's gRPC message limit "
                f"of {max_bytes} bytes; send smaller inputs or use REST")
        setattr(message, name, np.ascontiguousarray(array, dtype="<f4").tobytes())
    return message
