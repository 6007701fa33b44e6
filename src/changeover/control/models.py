"""Every table of the control plane, imported in one place for Alembic and create_all."""

from changeover.control.auth.models import Token
from changeover.control.builds.models import Branch, BranchEvent, Diff, Image, Update, Version
from changeover.control.content_place import ContentPlace
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    FleetHost,
    GameSession,
    Host,
    Instance,
    Profile,
    ProfileSwitch,
    Region,
    VersionCompat,
)
from changeover.control.leadership import LeaderLease
from changeover.control.news.models import NewsAuto, NewsEntry
from changeover.control.patchjobs.records import (
    AllocationWeight,
    HostStageRequest,
    PatchJob,
    PatchJobAction,
    PatchJobEmail,
    PatchJobEvent,
)
from changeover.control.patchjobs.v3_ids import V3Id

__all__ = [
    "AllocationWeight",
    "Application",
    "Branch",
    "BranchEvent",
    "ContentPlace",
    "Diff",
    "Environment",
    "Fleet",
    "FleetHost",
    "GameSession",
    "Host",
    "HostStageRequest",
    "Image",
    "Instance",
    "LeaderLease",
    "NewsAuto",
    "NewsEntry",
    "PatchJob",
    "PatchJobAction",
    "PatchJobEmail",
    "PatchJobEvent",
    "Profile",
    "ProfileSwitch",
    "Region",
    "Token",
    "Update",
    "V3Id",
    "Version",
    "VersionCompat",
]
