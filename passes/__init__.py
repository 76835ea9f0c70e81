"""hetmap's passes, one module each; a pass's `name` matches its module."""
