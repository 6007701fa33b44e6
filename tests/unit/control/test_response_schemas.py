"""Every operation of the API describes its success body (``openapi.undocumented``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from changeover.control import openapi
from changeover.control.app import create_app
from changeover.settings import Settings


def test_every_operation_of_the_app_describes_its_success(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    schema = app.openapi()
    operations = [(m, p) for p, item in schema["paths"].items() for m in item]
    assert len(operations) > 60
    assert openapi.undocumented(schema) == []
    # Spot checks that the models are the views' own, nested and all.
    components = schema["components"]["schemas"]
    assert {"sdk", "notice", "ports", "players"} <= set(components["InstanceOut"]["properties"])
    assert components["InstanceOut"]["additionalProperties"] is False
    assert "ProgressOut" in components and "HostDesired" in components


class Thing(BaseModel):
    name: str


def test_an_operation_without_a_described_body_is_found() -> None:
    app = FastAPI()

    @app.get("/loose")
    def loose() -> dict[str, Any]: ...

    @app.get("/loose-list")
    def loose_list() -> list[dict[str, Any]]: ...

    @app.get("/mapping")
    def mapping() -> dict[str, str]: ...

    @app.get("/typed", response_model=Thing)
    def typed() -> dict[str, Any]: ...

    @app.get("/typed-list")
    def typed_list() -> list[Thing]: ...

    assert openapi.undocumented(app.openapi()) == [
        "GET /loose 200: a JSON body with no fields described",
        "GET /loose-list 200: a JSON body with no fields described",
        "GET /mapping 200: a JSON body with no fields described",
    ]
