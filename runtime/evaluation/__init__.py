"""Measuring maps: localization metrics, the dataset readers with true boxes, the shapes generator."""
