"""Measuring what actions did: outcomes scored from the scans around them (the reward retraining learns from)."""
