"""isegprobe: how good are a frozen vision foundation model and a feature upsampler for pixel-precise work?

Measured by how few clicks an interactive-segmentation probe built on them needs. Stage one caches the
frozen featurizer's features in Zarr v3 stores; stage two trains and evaluates probes from that cache.
"""

__version__ = "0.1.0"
