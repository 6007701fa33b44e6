from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Duration(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: int
    def __init__(self, seconds: _Optional[int] = ...) -> None: ...

class GameServer(_message.Message):
    __slots__ = ("object_meta", "spec", "status")
    class ObjectMeta(_message.Message):
        __slots__ = ("name", "namespace", "uid", "resource_version", "generation", "creation_timestamp", "deletion_timestamp", "annotations", "labels")
        class AnnotationsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        class LabelsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        NAME_FIELD_NUMBER: _ClassVar[int]
        NAMESPACE_FIELD_NUMBER: _ClassVar[int]
        UID_FIELD_NUMBER: _ClassVar[int]
        RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
        GENERATION_FIELD_NUMBER: _ClassVar[int]
        CREATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        DELETION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
        LABELS_FIELD_NUMBER: _ClassVar[int]
        name: str
        namespace: str
        uid: str
        resource_version: str
        generation: int
        creation_timestamp: int
        deletion_timestamp: int
        annotations: _containers.ScalarMap[str, str]
        labels: _containers.ScalarMap[str, str]
        def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., uid: _Optional[str] = ..., resource_version: _Optional[str] = ..., generation: _Optional[int] = ..., creation_timestamp: _Optional[int] = ..., deletion_timestamp: _Optional[int] = ..., annotations: _Optional[_Mapping[str, str]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...
    class Spec(_message.Message):
        __slots__ = ("health",)
        class Health(_message.Message):
            __slots__ = ("disabled", "period_seconds", "failure_threshold", "initial_delay_seconds")
            DISABLED_FIELD_NUMBER: _ClassVar[int]
            PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
            FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
            INITIAL_DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
            disabled: bool
            period_seconds: int
            failure_threshold: int
            initial_delay_seconds: int
            def __init__(self, disabled: _Optional[bool] = ..., period_seconds: _Optional[int] = ..., failure_threshold: _Optional[int] = ..., initial_delay_seconds: _Optional[int] = ...) -> None: ...
        HEALTH_FIELD_NUMBER: _ClassVar[int]
        health: GameServer.Spec.Health
        def __init__(self, health: _Optional[_Union[GameServer.Spec.Health, _Mapping]] = ...) -> None: ...
    class Status(_message.Message):
        __slots__ = ("state", "address", "addresses", "ports", "players", "counters", "lists")
        class Address(_message.Message):
            __slots__ = ("type", "address")
            TYPE_FIELD_NUMBER: _ClassVar[int]
            ADDRESS_FIELD_NUMBER: _ClassVar[int]
            type: str
            address: str
            def __init__(self, type: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...
        class Port(_message.Message):
            __slots__ = ("name", "port")
            NAME_FIELD_NUMBER: _ClassVar[int]
            PORT_FIELD_NUMBER: _ClassVar[int]
            name: str
            port: int
            def __init__(self, name: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...
        class PlayerStatus(_message.Message):
            __slots__ = ("count", "capacity", "ids")
            COUNT_FIELD_NUMBER: _ClassVar[int]
            CAPACITY_FIELD_NUMBER: _ClassVar[int]
            IDS_FIELD_NUMBER: _ClassVar[int]
            count: int
            capacity: int
            ids: _containers.RepeatedScalarFieldContainer[str]
            def __init__(self, count: _Optional[int] = ..., capacity: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...
        class CounterStatus(_message.Message):
            __slots__ = ("count", "capacity")
            COUNT_FIELD_NUMBER: _ClassVar[int]
            CAPACITY_FIELD_NUMBER: _ClassVar[int]
            count: int
            capacity: int
            def __init__(self, count: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...
        class ListStatus(_message.Message):
            __slots__ = ("capacity", "values")
            CAPACITY_FIELD_NUMBER: _ClassVar[int]
            VALUES_FIELD_NUMBER: _ClassVar[int]
            capacity: int
            values: _containers.RepeatedScalarFieldContainer[str]
            def __init__(self, capacity: _Optional[int] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...
        class CountersEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: GameServer.Status.CounterStatus
            def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GameServer.Status.CounterStatus, _Mapping]] = ...) -> None: ...
        class ListsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: GameServer.Status.ListStatus
            def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[GameServer.Status.ListStatus, _Mapping]] = ...) -> None: ...
        STATE_FIELD_NUMBER: _ClassVar[int]
        ADDRESS_FIELD_NUMBER: _ClassVar[int]
        ADDRESSES_FIELD_NUMBER: _ClassVar[int]
        PORTS_FIELD_NUMBER: _ClassVar[int]
        PLAYERS_FIELD_NUMBER: _ClassVar[int]
        COUNTERS_FIELD_NUMBER: _ClassVar[int]
        LISTS_FIELD_NUMBER: _ClassVar[int]
        state: str
        address: str
        addresses: _containers.RepeatedCompositeFieldContainer[GameServer.Status.Address]
        ports: _containers.RepeatedCompositeFieldContainer[GameServer.Status.Port]
        players: GameServer.Status.PlayerStatus
        counters: _containers.MessageMap[str, GameServer.Status.CounterStatus]
        lists: _containers.MessageMap[str, GameServer.Status.ListStatus]
        def __init__(self, state: _Optional[str] = ..., address: _Optional[str] = ..., addresses: _Optional[_Iterable[_Union[GameServer.Status.Address, _Mapping]]] = ..., ports: _Optional[_Iterable[_Union[GameServer.Status.Port, _Mapping]]] = ..., players: _Optional[_Union[GameServer.Status.PlayerStatus, _Mapping]] = ..., counters: _Optional[_Mapping[str, GameServer.Status.CounterStatus]] = ..., lists: _Optional[_Mapping[str, GameServer.Status.ListStatus]] = ...) -> None: ...
    OBJECT_META_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    object_meta: GameServer.ObjectMeta
    spec: GameServer.Spec
    status: GameServer.Status
    def __init__(self, object_meta: _Optional[_Union[GameServer.ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[GameServer.Spec, _Mapping]] = ..., status: _Optional[_Union[GameServer.Status, _Mapping]] = ...) -> None: ...
