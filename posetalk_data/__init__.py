"""posetalk_data: talking-face videos to WebDataset shards."""
__version__ = "0.1.0"
