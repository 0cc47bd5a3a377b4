"""models.yaml, the alias registry: reading and validating it, editing it as its owner would
(comments kept, atomic writes under a lock), and following its changes while serving."""
