"""Debug side: backends, input data, comparison, bisect/reduce, scan, isolate."""
