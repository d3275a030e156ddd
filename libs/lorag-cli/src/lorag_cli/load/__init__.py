"""`lorag load`: drive one lorag service's RPC at a fixed rate or concurrency and report its latency.

- ``payloads``: which RPCs each service offers to the load tool, realistic requests for them, and the ``prepare``
  step some need (a collection with documents, a stored dataset, query vectors);
- ``runner``: the open-model (fixed rate) and closed-model (fixed concurrency) drivers;
- ``report``: HDR-histogram percentiles and errors by gRPC code, as the JSON scripts read;
- ``plot``: a self-contained HTML page of latency and throughput over time.
"""
