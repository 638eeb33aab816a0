"""Serving runtime: settings, error map, handler loading, web app and process supervision."""
