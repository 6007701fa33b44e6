"""Every table of the control plane, imported in one place for Alembic and create_all."""

from changeover.control.auth.models import Token
from changeover.control.builds.models import Branch, BranchEvent, Diff, Image, Update, Version

__all__ = ["Branch", "BranchEvent", "Diff", "Image", "Token", "Update", "Version"]
