"""The SDK's public API is exactly what games are told to import, and stays light."""

from __future__ import annotations

import subprocess
import sys

import changeover.sdk


def test_public_api_is_pinned() -> None:
    assert sorted(changeover.sdk.__all__) == [
        "AsyncGameServerSDK",
        "GameServerSDK",
        "SDK_TOKEN_ENV",
        "SDK_URL_ENV",
        "ShutdownNotice",
    ]
    for name in changeover.sdk.__all__:
        assert hasattr(changeover.sdk, name), name


def test_env_var_names_are_the_documented_ones() -> None:
    assert changeover.sdk.SDK_URL_ENV == "CHANGEOVER_SDK_URL"
    assert changeover.sdk.SDK_TOKEN_ENV == "CHANGEOVER_SDK_TOKEN"


def test_a_game_importing_the_client_does_not_pull_in_the_server() -> None:
    # A fresh interpreter, because this test process may already have imported FastAPI.
    code = (
        "import sys, changeover.sdk; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
