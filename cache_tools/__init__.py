"""Tools around feature stores: what is in one (`inspect`), whether it can be trusted (`verify`), how its features
are distributed (`stats`), and which stores a folder holds (`listing`).

Also reachable as `isegprobe cache inspect|info|verify|stats STORE` and `isegprobe cache ls STORE_ROOT`.
"""

from cache_tools.inspect import describe_store
from cache_tools.listing import list_stores
from cache_tools.stats import feature_stats, format_stats
from cache_tools.verify import verify_store

__all__ = ["describe_store", "feature_stats", "format_stats", "list_stores", "verify_store"]
