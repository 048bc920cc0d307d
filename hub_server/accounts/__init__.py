"""Accounts: organisations that own adapters, their members, and API tokens."""
