"""Presenters: they turn what an analysis returns into something people read."""
