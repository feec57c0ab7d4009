"""Helpers below every app: no models, imports no app."""
