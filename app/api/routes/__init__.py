"""One router per resource: detect, compare, attention, models, health, the page and the docs."""
