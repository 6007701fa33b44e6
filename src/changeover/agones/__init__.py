"""Agones SDK compatibility: each instance also gets Agones' SDK server (gRPC and REST).

Games written for Agones (official SDKs for Unity, Unreal, Go, C++, C#, Node.js, Rust, or
plain REST) run under a Changeover agent unchanged. The agent gives every instance its own
``AGONES_SDK_GRPC_PORT`` and ``AGONES_SDK_HTTP_PORT``; behind both, each call is translated
to the same per-instance SDK state (``changeover.sdk.state``) the Changeover SDK drives, so
one place decides what "ready", "allocated" and "shutdown" mean:

    gRPC (grpc.aio)  ──┐
                       ├─▶ service.AgonesInstance ─▶ SDKServer.apply(instance, change)
    REST (gateway)   ──┘          ▲                       │
                                  └── watch listeners ◀───┘ (every change, the notice too)

``gameserver`` builds the GameServer objects (pure), ``service`` holds the per-instance
calls and their gRPC status codes, ``grpc_server`` and ``gateway`` are the two wire
protocols, ``host`` runs them all for one agent on one event-loop thread. The official
protos are vendored in ``proto/`` and compiled into ``_pb`` (``make agones-protos``).
"""
