"""Utilities shared by the API and receiver modes."""
