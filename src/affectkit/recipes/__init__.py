"""Built-in training recipes: small YAML diffs against the defaults in ``affectkit.config``."""
