"""Test harnesses shared by the tests and the benchmarks: real worker processes killed
at random moments and their audit (faults), malformed inputs with the reason each must
get (fuzz)."""
