"""Generated from ../proto by ``make agones-protos``; do not edit."""
