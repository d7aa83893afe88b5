"""What the command line's commands need beyond parsing: the options reference of registered components
(``polyalign plugins NAME``, the docs' option pages) and ``validate --check-data``."""
