"""Data: the synthetic shapes generator, the COCO dataset, transforms and collate."""
