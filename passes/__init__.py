"""hetmap's passes, one module each, named like the pass; a pass's `name` is a class constant.

sensitivity.py also holds `sensitivity_before`, the same measurement on the
weights as brought, when fine-tuning follows.
"""
