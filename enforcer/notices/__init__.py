"""The notices' shell: due notices swept (due.py), notices closed when the registry resolves
them (resolve.py), both in rounds of their own thread (rounds.py); misuse notices opened with
the clone flags (flags.py), an operator's cancel (admin.py)."""
