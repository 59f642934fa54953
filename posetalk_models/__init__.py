"""posetalk_models: pose generation models trained on posetalk WebDataset shards (issue 6)."""
from posetalk_data import __version__

__all__ = ["__version__"]
