"""Content: manifests, hashing, the content store, diff analysis and delta delivery.

Pure library code shared by the control plane, the host agent and the launcher: it knows
files and bytes, never HTTP or databases.
"""
