"""Tools around a feature store: what is in it (`inspect`) and whether it can be trusted (`verify`).

Also reachable as `isegprobe cache inspect STORE` and `isegprobe cache verify STORE`.
"""

from cache_tools.inspect import describe_store
from cache_tools.verify import verify_store

__all__ = ["describe_store", "verify_store"]
