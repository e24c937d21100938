"""One module per phase group; every task's docstring has a ``Revert:`` line."""
