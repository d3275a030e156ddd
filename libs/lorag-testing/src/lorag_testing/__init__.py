"""Support for lorag's own test suites, kept out of every shipped package and image.

Launchers of real processes the tests need beside the services (Jaeger), and fake HTTP peers built on
pytest-httpserver (a TEI server, an OpenAI-protocol server) for the backends that speak HTTP.
"""
