"""The notices' shell: due notices swept, notices closed when the registry resolves them,
misuse notices opened with the clone flags, an operator's cancel, the cut-off list."""
