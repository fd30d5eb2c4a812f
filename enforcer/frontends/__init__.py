"""The synchronous EIR front ends the core network asks: N5g-eir's Equipment Identity
Check (3GPP TS 29.511) today, S13 (TS 29.272) next: reading checks, answering them, their
transport and server."""
