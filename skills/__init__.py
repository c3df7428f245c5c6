"""Taxonomy, keyword tagger, priority model, routing rules, skill groups, Redis queues."""
