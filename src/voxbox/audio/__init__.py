"""Audio I/O on PyAV: decode any common format, resample, encode."""
