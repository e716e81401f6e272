"""The presets, installed as the package `isegprobe.configs` (setup.cfg maps it here) so that an installed isegprobe
reads them with importlib.resources: training presets in train/, the datasets' loader options in datasets.yaml."""
