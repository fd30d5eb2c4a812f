"""eir-enforcer: the engine: IMEI identities, lists, registry state, decisions, CLI."""
