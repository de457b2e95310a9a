"""rote: memorize-then-generalize."""
__version__ = "0.1.0"
