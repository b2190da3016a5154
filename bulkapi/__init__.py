"""bulkapi: a bulk-operation path with per-resource ordering guarantees."""

__version__ = "0.1.0"
