"""Real-data benchmarks: FER2013, CK+ and FER2013 -> CK+ cross-domain (see README.md)."""
