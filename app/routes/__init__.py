"""One router per resource: detect, models, health, metrics."""
