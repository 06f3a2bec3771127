"""Commit engines: one contract (:mod:`.base`), one implementation per runtime."""
