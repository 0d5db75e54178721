"""Local stack for tests, benches and the demo: services on 127.0.0.1, seeding, fleet data.

Nothing here is used against real registries; it exists so every feature is driven against
real local services (moto, the distribution registry, an SMTP sink).
"""
