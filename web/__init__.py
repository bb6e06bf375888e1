"""HTTP API (Litestar) answering like vmpooler's API v3; input validation lives in ``web.validation``."""
