"""Usage events: ingest API, API tokens, meters, usage rollups and the meter query API.

The lowest layer: it knows subjects, never customers.
"""
