"""The ``/v3`` facade's bodies and answers, in seed 001's names and kinds (``v3_views``).

Strict, as the seed writes them: an id is a string of digits (a number is refused, and a
string where the seed has a number), no unknown field, every list and text bounded. The
read-only fields of an element are accepted and ignored (``v3_mapping.READ_ONLY``), so
that a ``GET`` answer can be sent back with ``PUT``. What the shape cannot say (an id
that names nothing, a start less than 5 minutes ahead, a method 9) the services refuse,
and ``v3_mapping.translate`` names the seed's field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from changeover.control.http_input import MAX_SECONDS, MAX_TIMESTAMP
from changeover.control.http_output import Out
from changeover.control.patchjobs import specs
from changeover.control.patchjobs.services import MAX_COMMENTS

SeedId = Annotated[str, Field(min_length=1, max_length=19, pattern=r"^[0-9]+$")]
"""An id as seed 001 writes it: ``"8939460394116420757"``."""
Code = Annotated[int, Field(ge=0, le=2**31 - 1)]
"""A small number the service checks further (a method, a stop method, a unit)."""
Flag = Annotated[int, Field(ge=0, le=1)]
Time = Annotated[int, Field(ge=0, le=int(MAX_TIMESTAMP))]
Duration = Annotated[int, Field(ge=0, le=int(MAX_SECONDS))]
Text = Annotated[str, Field(max_length=MAX_COMMENTS)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class V3BuildIn(_In):
    id: SeedId | None = None
    oldApplicationBuildId: SeedId  # noqa: N815 (the seed's names)
    newApplicationBuildId: SeedId  # noqa: N815


class V3FleetIn(_In):
    id: SeedId | None = None
    fleetId: SeedId  # noqa: N815


class V3EmailIn(_In):
    id: SeedId | None = None
    email: Annotated[str, Field(max_length=254)]
    progressReport: Flag = 1  # noqa: N815
    resultReport: Flag = 1  # noqa: N815
    createdAt: Time | None = None  # noqa: N815
    changedAt: Time | None = None  # noqa: N815


Builds = Annotated[list[V3BuildIn], Field(max_length=specs.MAX_BUILDS)]
Fleets = Annotated[list[V3FleetIn], Field(max_length=specs.MAX_FLEETS)]


class V3PatchJobEdit(_In):
    """``PUT /v3/patchJob/{id}``: the fields sent change, the others stay."""

    deploymentEnvironmentId: SeedId | None = None  # noqa: N815
    applicationId: SeedId | None = None  # noqa: N815
    patchJobMethodId: Code | None = None  # noqa: N815
    patchJobName: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # noqa: N815
    stopMethodId: Code | None = None  # noqa: N815
    stopMethodTimeout: Duration | None = None  # noqa: N815
    comments: Text | None = None
    schedulerStartTime: Time | None = None  # noqa: N815
    patchJobRunTime: Duration | None = None  # noqa: N815
    patchJobRuntimeType: Code | None = None  # noqa: N815
    applicationBuild: Builds | None = None  # noqa: N815
    fleet: Fleets | None = None
    email: Annotated[list[V3EmailIn], Field(max_length=specs.MAX_EMAILS)] | None = None
    # Read-only: accepted, ignored.
    id: SeedId | None = None
    patchJobMethod: Annotated[str, Field(max_length=200)] | None = None  # noqa: N815
    status: Code | None = None
    stopMethodName: Annotated[str, Field(max_length=200)] | None = None  # noqa: N815
    patchJobStartTime: Time | None = None  # noqa: N815
    patchJobRuntime: Annotated[str, Field(max_length=40)] | None = None  # noqa: N815
    patchJobInstanceRunTime: Annotated[str, Field(max_length=40)] | None = None  # noqa: N815
    patchJobInstanceRuntimeTypeId: Code | None = None  # noqa: N815
    patchJobInstanceRuntime: Annotated[str, Field(max_length=40)] | None = None  # noqa: N815
    patchJobOverallProgress: Annotated[int, Field(ge=0, le=100)] | None = None  # noqa: N815
    createdAt: Time | None = None  # noqa: N815
    changedAt: Time | None = None  # noqa: N815
    updatedAt: Time | None = None  # noqa: N815


class V3PatchJobIn(V3PatchJobEdit):
    """``POST /v3/patchJob``: the seed's required fields required."""

    deploymentEnvironmentId: SeedId  # noqa: N815
    applicationId: SeedId  # noqa: N815
    patchJobMethodId: Code  # noqa: N815
    patchJobName: Annotated[str, Field(min_length=1, max_length=200)]  # noqa: N815
    applicationBuild: Annotated[  # noqa: N815
        list[V3BuildIn], Field(min_length=1, max_length=specs.MAX_BUILDS)
    ]
    fleet: Annotated[list[V3FleetIn], Field(min_length=1, max_length=specs.MAX_FLEETS)]


class V3PreviewIn(_In):
    """``POST /v3/patchJob/applicationInstancePreview``: the selection of a job."""

    deploymentEnvironmentId: SeedId  # noqa: N815
    applicationId: SeedId  # noqa: N815
    applicationBuild: Annotated[  # noqa: N815
        list[V3BuildIn], Field(min_length=1, max_length=specs.MAX_BUILDS)
    ]
    fleet: Annotated[list[V3FleetIn], Field(min_length=1, max_length=specs.MAX_FLEETS)]


class V3CancelIn(_In):
    """``POST /v3/patchJob/{id}/cancel``: 1 to cancel and revert, 0 to cancel and wrap up."""

    revert: Flag


# -- answers -------------------------------------------------------------------------------


class V3BuildOut(Out):
    id: str
    oldApplicationBuildId: str  # noqa: N815
    newApplicationBuildId: str  # noqa: N815


class V3FleetOut(Out):
    id: str
    fleetId: str  # noqa: N815


class V3EmailOut(Out):
    id: str
    email: str
    progressReport: int  # noqa: N815
    resultReport: int  # noqa: N815
    createdAt: int  # noqa: N815
    changedAt: int  # noqa: N815


class V3PatchJobOut(Out):
    id: str
    deploymentEnvironmentId: str  # noqa: N815
    applicationId: str  # noqa: N815
    patchJobMethodId: int  # noqa: N815
    patchJobMethod: str  # noqa: N815
    patchJobName: str  # noqa: N815
    status: int
    stopMethodId: int | None  # noqa: N815
    stopMethodName: str | None  # noqa: N815
    stopMethodTimeout: int | None  # noqa: N815
    comments: str
    schedulerStartTime: int  # noqa: N815
    patchJobStartTime: int  # noqa: N815
    patchJobRunTime: int  # noqa: N815
    patchJobRuntimeType: int  # noqa: N815
    patchJobRuntime: str  # noqa: N815
    patchJobInstanceRunTime: str  # noqa: N815
    """As the seed's example answers it: the unit's name."""
    patchJobInstanceRuntimeTypeId: int  # noqa: N815
    patchJobInstanceRuntime: str  # noqa: N815
    patchJobOverallProgress: int | None  # noqa: N815
    """Percent of the selection done; null before the start."""
    applicationBuild: list[V3BuildOut]  # noqa: N815
    fleet: list[V3FleetOut]
    email: list[V3EmailOut]
    createdAt: int  # noqa: N815
    changedAt: int  # noqa: N815
    """When the job was last edited; 0 until it is."""
    updatedAt: int  # noqa: N815
    """The seed's table calls ``changedAt`` so: the same value."""


class V3NamedOut(Out):
    id: int
    name: str


class V3RegionOut(Out):
    regionId: str  # noqa: N815
    regionName: str  # noqa: N815
    instanceCount: int  # noqa: N815


class V3IdIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]


class V3IdOut(Out):
    kind: str
    id: str
    name: str
    local_id: int


__all__ = [
    "V3CancelIn",
    "V3IdIn",
    "V3IdOut",
    "V3NamedOut",
    "V3PatchJobEdit",
    "V3PatchJobIn",
    "V3PatchJobOut",
    "V3PreviewIn",
    "V3RegionOut",
]
