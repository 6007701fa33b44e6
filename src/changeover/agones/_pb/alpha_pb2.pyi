from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Count(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class Bool(_message.Message):
    __slots__ = ("bool",)
    BOOL_FIELD_NUMBER: _ClassVar[int]
    bool: bool
    def __init__(self, bool: _Optional[bool] = ...) -> None: ...

class PlayerID(_message.Message):
    __slots__ = ("playerID",)
    PLAYERID_FIELD_NUMBER: _ClassVar[int]
    playerID: str
    def __init__(self, playerID: _Optional[str] = ...) -> None: ...

class PlayerIDList(_message.Message):
    __slots__ = ("list",)
    LIST_FIELD_NUMBER: _ClassVar[int]
    list: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, list: _Optional[_Iterable[str]] = ...) -> None: ...
