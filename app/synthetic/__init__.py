"""Seeded synthetic data: the three studies' CSV sources and a hospital population bundle (see generator.py)."""
