"""Built-in loss, dataset, evaluator and logger plugins."""
