"""The registry's files: reading them with their safety checks, importing a delivery,
building a state from files, and the snapshots a state is saved as."""
