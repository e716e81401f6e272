"""The interactive demo: a local web page on which a person clicks and a trained probe segments, on CPU or GPU."""
