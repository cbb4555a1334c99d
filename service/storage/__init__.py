"""Storage primitives the registry and drift share: atomic files with digests, and object-store operations."""
