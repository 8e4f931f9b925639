"""Reports from MLflow: a grid's cells as polars (data), tables (HTML, LaTeX, Markdown),
figures, the self-contained page, and the command that writes them (build)."""
