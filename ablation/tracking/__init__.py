"""The only code that imports mlflow: runs, searches by tag with quoted values, reading a study back."""
