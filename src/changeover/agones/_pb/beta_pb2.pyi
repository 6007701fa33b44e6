from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "count", "capacity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    capacity: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class CounterUpdateRequest(_message.Message):
    __slots__ = ("name", "count", "capacity", "countDiff")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    COUNTDIFF_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: _wrappers_pb2.Int64Value
    capacity: _wrappers_pb2.Int64Value
    countDiff: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[_Union[_wrappers_pb2.Int64Value, _Mapping]] = ..., capacity: _Optional[_Union[_wrappers_pb2.Int64Value, _Mapping]] = ..., countDiff: _Optional[int] = ...) -> None: ...

class GetCounterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateCounterRequest(_message.Message):
    __slots__ = ("counterUpdateRequest",)
    COUNTERUPDATEREQUEST_FIELD_NUMBER: _ClassVar[int]
    counterUpdateRequest: CounterUpdateRequest
    def __init__(self, counterUpdateRequest: _Optional[_Union[CounterUpdateRequest, _Mapping]] = ...) -> None: ...

class List(_message.Message):
    __slots__ = ("name", "capacity", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    capacity: int
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., capacity: _Optional[int] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class GetListRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateListRequest(_message.Message):
    __slots__ = ("list", "update_mask")
    LIST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    list: List
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, list: _Optional[_Union[List, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class AddListValueRequest(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RemoveListValueRequest(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
