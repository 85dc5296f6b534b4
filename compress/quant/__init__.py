"""Quantization: outlier statistics, W8A8 PTQ and QAT."""
