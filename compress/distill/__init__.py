"""Distillation (TinyCLIP, Wu et al. 2023): losses, manual and automatic weight inheritance, and the
student trained against online teachers."""
