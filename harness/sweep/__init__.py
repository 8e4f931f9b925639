"""Declarative grids (experiments/*.yaml), shared cached stages, MLflow tracking, resume."""
