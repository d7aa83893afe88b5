"""Built-in encoder, loss, dataset, evaluator and logger plugins, registered through the same hooks as
third-party ones."""
