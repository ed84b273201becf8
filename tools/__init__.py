"""Operator and benchmark scripts."""
