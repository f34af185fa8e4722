"""prefopt recipes: code under ``recipes/<name>/`` and configs as ``recipes/<name>.yaml``."""
