"""The model registry: immutable versions, aliases (champion, candidate), history; in a folder or on
object storage (`backend` picks which)."""
