"""Training jobs: the store, the worker-event translation, capacity checks and the scheduler."""
