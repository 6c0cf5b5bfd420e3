"""Peers' own test cases as conformance data, and the peer schedulers they check."""
