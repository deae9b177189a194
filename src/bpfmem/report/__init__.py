"""Rendering results: terminal tables, JSON documents, plots."""
