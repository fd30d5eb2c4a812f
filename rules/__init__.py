"""The enforcement policy: which verdict each kind of attach gets and what follows from it.
The policy is data (`default.toml`); `policy.py` loads and checks it."""
