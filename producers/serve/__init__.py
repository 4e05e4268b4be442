"""`producer serve`: the fleet behind an HTTP API (OpenAI-compatible chat, jobs, health, metrics)."""
