"""The comparison report of a study: read from MLflow, statistics, tables, figures, rendering (see build)."""
