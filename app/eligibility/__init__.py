"""Eligibility: the criteria language and its evaluation (pure: no web framework)."""
