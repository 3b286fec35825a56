"""Part labels: the canonical on-disk format, groupings into method parts, readers and makers."""
