"""Access tokens and scopes."""
