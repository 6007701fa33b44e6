"""The game-server SDK: what a game process uses to talk to the Changeover host agent.

A game reads ``CHANGEOVER_SDK_URL`` and ``CHANGEOVER_SDK_TOKEN`` from its environment and
calls ready, health, player connected/disconnected, labels, waits for a shutdown notice and
acknowledges its save. The wire protocol is in ``docs/sdk-protocol.md``, so any language can
speak it; this package is the Python client. The agent's side, ``SDKServer``, lives in
``changeover.sdk.server`` and is not imported here, so games need only httpx.
"""

from changeover.sdk.client import (
    SDK_TOKEN_ENV,
    SDK_URL_ENV,
    AsyncGameServerSDK,
    GameServerSDK,
)
from changeover.sdk.state import ShutdownNotice

__all__ = [
    "SDK_TOKEN_ENV",
    "SDK_URL_ENV",
    "AsyncGameServerSDK",
    "GameServerSDK",
    "ShutdownNotice",
]
