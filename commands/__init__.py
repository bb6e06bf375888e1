"""The application layer: atomic pool decisions, the pool manager, workers and their handlers,
the provider port and the settings contract."""
