"""httppush: an eKuiper portable source plugin that receives records pushed over HTTP(S)."""

__version__ = "0.1.0"
