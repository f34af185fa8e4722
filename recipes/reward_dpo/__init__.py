"""Generate → score → select → train, for any rewards, selectors and backbone, over one or more rounds."""
