"""rote: memorize-then-generalize."""
__version__ = "0.1.0"


def __getattr__(name):
    # `rote.inject(...)`: imported on first use, so `import rote` stays light (no torch).
    if name == "inject":
        from rote.injection import inject
        return inject
    raise AttributeError(f"module 'rote' has no attribute {name!r}")
