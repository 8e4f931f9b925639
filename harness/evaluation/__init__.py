"""Evaluation through lmms-eval: a model class over any in-memory adapter, the local shapes
tasks, and named suites (see suites.yaml)."""
