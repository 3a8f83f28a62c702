"""``ConfigError``: a setting or property is missing or has a value the plugin cannot use.

A leaf: every module that checks settings raises it, and the message is what eKuiper shows as the rule's start error,
so it names the key, quotes the value and says what is allowed, e.g. ``property 'method' is 'GET'; must be POST or
PUT``."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or has a value we cannot use."""
