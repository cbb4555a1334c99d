"""Gate policies shipped with embedgate (package data, so that they install with the wheel).

from gates.quality_gate.policy import default_policy   # reads default.yaml from here
"""
