"""Tensors of the Open Inference Protocol, to and from numpy, whichever way they travel.

Data arrives as JSON (flat or nested ``data``), as raw little-endian bytes (REST's binary
extension, gRPC's ``raw_input_contents``) or as gRPC's typed ``contents``. Everything a
client states is checked before anything is allocated from it: every dimension is a
non-negative integer, the element count stays under the limit, and the data carries exactly
the declared shape, no more and no less. BYTES elements travel as a 4-byte little-endian
length before each element's bytes; a length running past the buffer is an error.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInput, PayloadTooLarge

#: The protocol's datatypes and their little-endian numpy types (BYTES: Python bytes objects).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_LENGTH = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # BYTES: an object array of bytes

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)


def check_datatype(name: str, datatype: Any) -> str:
    if datatype not in DTYPES:
        raise InvalidInput(f"input {name!r}: unknown datatype {str(datatype)[:20]!r}; "
                           f"the protocol's are {', '.join(DTYPES)}", code="bad_datatype")
    return datatype


def element_count(name: str, shape: Any, max_elements: int) -> int:
    """The number of elements ``shape`` holds, refused past ``max_elements`` before any is read."""
    if not isinstance(shape, (list, tuple)) or len(shape) > 16:
        raise InvalidInput(f"input {name!r}: shape must be a list of at most 16 dimensions", code="bad_shape")
    count = 1
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidInput(f"input {name!r}: shape {list(shape)[:16]} has a dimension that is not a "
                               "non-negative integer", code="bad_shape")
        count *= dim
        if count > max_elements:
            raise PayloadTooLarge(f"input {name!r}: shape {list(shape)} holds more than this server's limit of "
                                  f"{max_elements} elements per tensor", code="tensor_too_large")
    return count


def split_bytes(name: str, raw: bytes | memoryview, count: int) -> list[bytes]:
    """``count`` length-prefixed BYTES elements that fill ``raw`` exactly."""
    items, offset, size = [], 0, len(raw)
    while offset < size:
        if len(items) == count:
            raise InvalidInput(f"input {name!r}: {size - offset} bytes left after its {count} BYTES elements",
                               code="bad_tensor_data")
        if offset + 4 > size:
            raise InvalidInput(f"input {name!r}: BYTES element {len(items)} has a truncated length prefix",
                               code="bad_tensor_data")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if length > size - offset:
            raise InvalidInput(f"input {name!r}: BYTES element {len(items)} claims {length} bytes but only "
                               f"{size - offset} remain", code="bad_tensor_data")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInput(f"input {name!r}: carries {len(items)} BYTES elements but its shape holds {count}",
                           code="shape_mismatch")
    return items


def _object_array(items: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array.reshape(shape)


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview, max_elements: int) -> Tensor:
    """A tensor from its binary form (little-endian, row-major; BYTES length-prefixed)."""
    check_datatype(name, datatype)
    count = element_count(name, shape, max_elements)
    if datatype == "BYTES":
        return Tensor(name, datatype, _object_array(split_bytes(name, raw, count), shape))
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"input {name!r}: {len(raw)} bytes of data, but shape {list(shape)} of {datatype} needs "
                           f"{count * dtype.itemsize}", code="shape_mismatch")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidInput(f"input {name!r}: BOOL elements must be bytes 0 or 1", code="bad_tensor_data")
    return Tensor(name, datatype, array)


def _flatten(name: str, data: Any, limit: int) -> list[Any]:
    """The leaves of nested lists, row-major; refuses more than ``limit`` of them."""
    if not isinstance(data, list):
        data = [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > 16:
                raise InvalidInput(f"input {name!r}: data is nested deeper than 16 levels", code="bad_tensor_data")
            stack.append(iter(item))
        else:
            out.append(item)
            if len(out) > limit:
                raise InvalidInput(f"input {name!r}: data holds more elements than its shape", code="shape_mismatch")
    return out


_END = object()


def _check_json_element(name: str, datatype: str, value: Any) -> Any:
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise InvalidInput(f"input {name!r}: BYTES elements in JSON must be strings", code="bad_tensor_data")
        return value.encode("utf-8")
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise InvalidInput(f"input {name!r}: BOOL elements must be true or false", code="bad_tensor_data")
        return value
    if datatype.startswith(("INT", "UINT")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"input {name!r}: {datatype} elements must be integers", code="bad_tensor_data")
        info = np.iinfo(DTYPES[datatype])
        if not info.min <= value <= info.max:
            raise InvalidInput(f"input {name!r}: {value} is outside the range of {datatype}", code="bad_tensor_data")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"input {name!r}: {datatype} elements must be numbers", code="bad_tensor_data")
    return value


def from_json(name: str, datatype: str, shape: Sequence[int], data: Any, max_elements: int) -> Tensor:
    """A tensor from JSON ``data``: flat or nested as the shape, either way row-major."""
    check_datatype(name, datatype)
    count = element_count(name, shape, max_elements)
    values = [_check_json_element(name, datatype, v) for v in _flatten(name, data, count)]
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: data holds {len(values)} elements but shape {list(shape)} holds {count}",
                           code="shape_mismatch")
    if datatype == "BYTES":
        return Tensor(name, datatype, _object_array(values, shape))
    try:
        array = np.array(values, dtype=DTYPES[datatype]).reshape(shape)
    except OverflowError:
        raise InvalidInput(f"input {name!r}: a value is outside the range of {datatype}", code="bad_tensor_data") from None
    return Tensor(name, datatype, array)


def to_raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(item)) + item for item in tensor.array.ravel())
    return np.ascontiguousarray(tensor.array, dtype=DTYPES[tensor.datatype]).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """Row-major, flat; BYTES as text (invalid UTF-8 replaced: ask for binary data to get the bytes)."""
    flat = tensor.array.ravel()
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8", errors="replace") for item in flat]
    return flat.tolist()
